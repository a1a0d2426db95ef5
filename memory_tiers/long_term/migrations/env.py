"""Alembic environment: runs on the connection memory_tiers hands in (see long_term/migrate.py)."""

from alembic import context

from memory_tiers.long_term.migrate import VERSION_TABLE
from memory_tiers.long_term.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
