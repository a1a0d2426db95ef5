"""Merging a patch into a user's profile: one upsert, built once per shape and bound per call.

The merge happens inside the database (PostgreSQL's jsonb ``||``, SQLite's ``json_set``), so
concurrent writers never lose each other's keys; nested values are replaced whole. Re-stating
what the profile already says is not a new version. The upsert never merges into a document of
an older shape: it returns no row, and the profile is migrated first (`bring_forward`), which
needs a SQLAlchemy connection. A transaction sent straight to the driver has none, so there
`OldProfileShape` is raised and the caller runs the transaction again on SQLAlchemy's path.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, bindparam, case, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_tiers.errors import InvalidIdentifierError
from memory_tiers.long_term.consolidate import insert_for
from memory_tiers.long_term.profile_migration import bring_forward, read_profile
from memory_tiers.long_term.schema import profiles
from memory_tiers.long_term.statements import Statements
from memory_tiers.state.migrators import StateMigrator

_PROFILE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class OldProfileShape(Exception):
    """The profile must be migrated before the patch merges, and only SQLAlchemy's path can."""


def check_keys(patch: dict[str, Any]) -> None:
    """Raise `InvalidIdentifierError` for a key that is not a valid profile key."""
    for key in patch:
        if not isinstance(key, str) or not _PROFILE_KEY.fullmatch(key):
            raise InvalidIdentifierError(
                f"profile key {key!r} is invalid: use 1-128 letters, digits or _ . -"
            )


@functools.lru_cache(maxsize=64)
def _upsert(dialect: str, n_keys: int) -> Any:
    """The upsert for a patch of ``n_keys`` keys (on PostgreSQL one shape for every patch)."""
    if dialect == "postgresql":
        merged: Any = profiles.c.document.op("||")(bindparam("p_patch", type_=postgresql.JSONB))
        changed = merged != profiles.c.document  # jsonb compares by value
    else:
        paths_and_values: list[Any] = []
        for i in range(n_keys):
            paths_and_values += [
                bindparam(f"p_path{i}", type_=String),
                func.json(bindparam(f"p_value{i}", type_=String)),
            ]
        merged = func.json_set(profiles.c.document, *paths_and_values)
        changed = func.json(merged) != func.json(profiles.c.document)  # canonical text on both sides
    now = bindparam("p_now", type_=DateTime(timezone=True))
    schema = bindparam("p_schema", type_=Integer)
    insert = insert_for(dialect, profiles).values(
        user_id=bindparam("p_user", type_=String),
        document=bindparam("p_document", type_=profiles.c.document.type),
        version=1,
        schema_version=schema,
        created_at=now,
        updated_at=now,
    )
    return insert.on_conflict_do_update(
        index_elements=[profiles.c.user_id],
        set_={
            "document": merged,
            "version": profiles.c.version + case((changed, 1), else_=0),
            "updated_at": case((changed, now), else_=profiles.c.updated_at),
        },
        # Never merge into an old-shape document: no row comes back, and it is migrated first.
        where=profiles.c.schema_version >= schema,
    ).returning(profiles.c.user_id)


def _params(
    dialect: str, user_id: str, patch: dict[str, Any], now: datetime, schema_version: int
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "p_user": user_id,
        "p_document": patch,
        "p_now": now,
        "p_schema": schema_version,
    }
    if dialect == "postgresql":
        return params | {"p_patch": patch}
    for i, (key, value) in enumerate(patch.items()):
        params[f"p_path{i}"] = f'$."{key}"'  # the key is checked (`check_keys`): no quote in it
        params[f"p_value{i}"] = json.dumps(value, allow_nan=False)
    return params


async def merge_patch(
    statements: Statements,
    conn: AsyncConnection | None,
    *,
    dialect: str,
    migrator: StateMigrator,
    schema_version: int,
    user_id: str,
    patch: dict[str, Any],
    now: datetime,
) -> None:
    """Merge ``patch`` into the user's profile (a new one is written at ``schema_version``), in
    the caller's transaction. An older-shaped document is migrated first on ``conn``; without
    one (a transaction straight to the driver) `OldProfileShape` is raised instead.

    Raises:
        InvalidIdentifierError: a key of ``patch`` is not a valid profile key.
    """
    check_keys(patch)
    stmt = _upsert(dialect, 0 if dialect == "postgresql" else len(patch))
    params = _params(dialect, user_id, patch, now, schema_version)
    if await statements.rows(stmt, params):
        return
    if conn is None:
        raise OldProfileShape(user_id)
    # The attempted upsert locked the row (PostgreSQL) or the database (SQLite), so the
    # migration's compare-and-set cannot miss and the retry merges into the new shape.
    await bring_forward(conn, migrator, schema_version, user_id, await read_profile(conn, user_id))
    await statements.rows(stmt, params)
