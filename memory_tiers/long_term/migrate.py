"""Versioned schema setup for the long-term tier, through Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

# Our own version table, so an application's Alembic history on the same database is untouched.
VERSION_TABLE = "memory_tiers_alembic_version"


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision this version of memory_tiers knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(_alembic_config(connection), revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at (None when memory_tiers never set it up)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


# pg_advisory_xact_lock(class, key) taken by an upgrade (the class is mt_consolidate's, "mt": 0x6D74).
_SCHEMA_LOCK = (0x6D74, 0x736368)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database schema to ``revision`` in one transaction (where the dialect allows).

    Workers starting together on a new database take turns: the first migrates, the others
    then find the schema current (on SQLite the write lock is taken up front, on PostgreSQL an
    advisory lock).
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:c, :k)"), dict(zip("ck", _SCHEMA_LOCK, strict=True))
            )
        await conn.run_sync(_upgrade, revision)
