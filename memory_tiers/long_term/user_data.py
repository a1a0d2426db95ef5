"""All of one user's long-term rows: read page by page for an export, deleted in one transaction.

The user's tables are found in the schema itself (every table with a ``user_id`` column), so a
table added by a later migration is exported and deleted without changes here. Statements are
Core, built from the `Table` objects, with the user id bound as a parameter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Delete, Table, delete, select, tuple_

from memory_tiers.long_term.schema import fact_observations, facts, metadata, profiles
from memory_tiers.translate import translate_errors

if TYPE_CHECKING:
    from memory_tiers.long_term.store import LongTermStore

TIER = "long_term"
PAGE_SIZE = 500
Row = dict[str, Any]

# Export sections of the tables that have a shape of their own; any other user table is exported
# under its table name.
_SECTIONS = {"mt_archives": "archives", "mt_threads": "threads", "mt_store_items": "store_items"}


def user_tables() -> list[Table]:
    """Every long-term table holding rows of a user (all that have a ``user_id`` column).

    Example:
        >>> "mt_threads" in [table.name for table in user_tables()]
        True
    """
    return [table for table in metadata.sorted_tables if "user_id" in table.c]


def _aware(row: Row) -> Row:
    # SQLite hands back naive datetimes; everything memory_tiers writes is UTC.
    return {
        key: value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


async def user_rows(
    store: LongTermStore, table: Table, user_id: str, *, page_size: int = PAGE_SIZE
) -> AsyncIterator[Row]:
    """The user's rows of ``table`` in primary-key order, read ``page_size`` at a time (keyset
    pagination: each page starts after the last key of the one before)."""
    key = [column for column in table.primary_key.columns if column.name != "user_id"]
    stmt = select(table).where(table.c.user_id == user_id).order_by(*key).limit(page_size)
    after: tuple[Any, ...] | None = None
    while True:
        page = stmt if after is None else stmt.where(tuple_(*key) > tuple_(*after))
        with translate_errors(TIER, store.masked_url):
            async with store.engine.connect() as conn:
                rows = (await conn.execute(page)).mappings().all()
        for row in rows:
            yield _aware(dict(row))
        if not key or len(rows) < page_size:
            return
        after = tuple(rows[-1][column.name] for column in key)


async def export_rows(store: LongTermStore, user_id: str) -> dict[str, Any]:
    """Everything the long-term tier holds about the user, as rows (values still Python objects).

    Returns:
        ``profile`` (the row, or None), ``facts`` (current and superseded, each with its
        ``observations``), ``threads`` (the registry), ``archives``, ``store_items`` (the LangGraph
        store's items), and any other user table under its own name.
    """
    observations: dict[str, list[Row]] = {}
    async for row in user_rows(store, fact_observations, user_id):
        observations.setdefault(row["fact_id"], []).append(row)
    exported: dict[str, Any] = {"profile": None, "facts": []}
    async for row in user_rows(store, profiles, user_id):
        exported["profile"] = row
    async for row in user_rows(store, facts, user_id):
        exported["facts"].append({**row, "observations": observations.pop(row["id"], [])})
    if observations:  # observations whose fact is gone (none are written so; kept all the same)
        exported["orphan_observations"] = [row for rows in observations.values() for row in rows]
    for table in user_tables():
        if table in (profiles, facts, fact_observations):
            continue
        exported[_SECTIONS.get(table.name, table.name)] = [
            row async for row in user_rows(store, table, user_id)
        ]
    return exported


def _delete_statement(table: Table, user_id: str) -> Delete:
    return delete(table).where(table.c.user_id == user_id)


async def delete_user_rows(store: LongTermStore, user_id: str) -> dict[str, int]:
    """Delete every row of the user, in every user table, in one transaction.

    On SQLite the full-text index of the facts is kept in step by its triggers. Idempotent: a
    second call deletes nothing.

    Returns:
        The number of rows deleted per table name.
    """
    deleted: dict[str, int] = {}
    with translate_errors(TIER, store.masked_url):
        async with store.engine.begin() as conn:
            for table in user_tables():
                result = await conn.execute(_delete_statement(table, user_id))
                deleted[table.name] = result.rowcount
    return deleted
