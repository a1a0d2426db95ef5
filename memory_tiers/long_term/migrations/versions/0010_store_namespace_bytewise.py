"""PostgreSQL: the store's namespaces collate bytewise (``COLLATE "C"``).

A prefix search finds a namespace by equality and those below it in a bytewise range
(``= 'a.b'``, or ``>= 'a.b.'`` and ``< 'a.b/'``, see
``memory_tiers.store.namespaces.under_prefix_of``), compared in the "C" collation so that it is
right whatever the database's collation. The primary key
``(user_id, namespace, key)`` serves that range only if its namespace column collates the same
way, so the column moves to "C"; PostgreSQL rebuilds the primary key's index, and no row
changes (equality is bytewise in every deterministic collation). Before, the search bounded its
index scan only through a LIKE pattern known when the statement was planned, which a generic
plan (``long_term.generic_plans``) is not. SQLite compares text bytewise already. Downgrading
gives the column the database's collation back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE mt_store_items ALTER COLUMN namespace TYPE text COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE mt_store_items ALTER COLUMN namespace TYPE text COLLATE "default"')
