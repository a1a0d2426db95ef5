"""The store's writes, built once per dialect: the upsert of a put, the delete, the TTL refresh.

As with the reads (`memory_tiers.store.statements`), building a statement per call cost more
Python than its round trip (the upsert's ON CONFLICT clause most of all). Every value is bound,
and every statement is scoped by the user it writes for (``:b_user``; the upsert's
``user_id`` column).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, update
from sqlalchemy.dialects import postgresql, sqlite

from memory_tiers.long_term.schema import store_items as items
from memory_tiers.store import items as checks

USER, NAMESPACE, KEY, TTL, EXPIRES = "b_user", "b_namespace", "b_key", "b_ttl", "b_expires"
UPSERT_KEYS = (
    "user_id",
    "namespace",
    "key",
    "value",
    "created_at",
    "updated_at",
    "expires_at",
    "ttl_minutes",
)
"""The upsert's bound columns: the keys of every `upsert_row`."""
Pair = tuple[str, str]  # (namespace text, key)


class StoreWrites:
    """The store's write statements on one dialect (``"postgresql"`` or ``"sqlite"``)."""

    def __init__(self, dialect: str) -> None:
        where_item = (
            items.c.user_id == bindparam(USER),
            items.c.namespace == bindparam(NAMESPACE),
            items.c.key == bindparam(KEY),
        )
        # Only if the TTL is still the one read: a concurrent put with a new TTL wins.
        self.refresh = (
            update(items)
            .where(*where_item, items.c.ttl_minutes == bindparam(TTL))
            .values(expires_at=bindparam(EXPIRES))
        )
        self.delete = delete(items).where(*where_item)
        insert = postgresql.insert(items) if dialect == "postgresql" else sqlite.insert(items)
        self.upsert = insert.on_conflict_do_update(
            index_elements=[items.c.user_id, items.c.namespace, items.c.key],
            # created_at stays: an update keeps the item's creation time, as LangGraph's
            # PostgreSQL store does.
            set_={
                "value": insert.excluded.value,
                "updated_at": insert.excluded.updated_at,
                "expires_at": insert.excluded.expires_at,
                "ttl_minutes": insert.excluded.ttl_minutes,
            },
        )

    def statements(
        self,
        user_id: str,
        now: datetime,
        refresh: Mapping[Pair, float],
        writes: Mapping[Pair, tuple[Any, float | None] | None],
    ) -> list[Write]:
        """What a batch writes for ``user_id`` at ``now``, in order: the TTL refreshes of its
        reads, its deletes (a None write), its upserts (a ``(value, ttl)`` write); each statement
        with its rows, only those with rows."""
        deletes = [item_params(user_id, ns, key) for (ns, key), write in writes.items() if write is None]
        upserts = [
            upsert_row(user_id, ns, key, *write, now)
            for (ns, key), write in writes.items()
            if write is not None
        ]
        found = [
            Write(
                self.refresh,
                [refresh_params(user_id, ns, key, ttl, now) for (ns, key), ttl in refresh.items()],
            ),
            Write(self.delete, deletes),
            Write(self.upsert, upserts, UPSERT_KEYS),
        ]
        return [write for write in found if write.rows]


class Write(NamedTuple):
    """One write statement of a batch, its rows, and the columns an INSERT binds."""

    statement: Any
    rows: list[dict[str, Any]]
    column_keys: tuple[str, ...] | None = None


def item_params(user_id: str, namespace: str, key: str) -> dict[str, Any]:
    """The parameters naming one item of ``user_id`` (the delete's; the refresh adds two)."""
    return {USER: user_id, NAMESPACE: namespace, KEY: key}


def upsert_row(
    user_id: str, namespace: str, key: str, value: Any, ttl: float | None, now: datetime
) -> dict[str, Any]:
    """The upsert's parameters for one put at ``now``, keyed by `UPSERT_KEYS`."""
    values = (user_id, namespace, key, value, now, now, checks.expiry(now, ttl), ttl)
    return dict(zip(UPSERT_KEYS, values, strict=True))


def refresh_params(user_id: str, namespace: str, key: str, ttl: float, now: datetime) -> dict[str, Any]:
    """The TTL refresh's parameters for one item read at ``now`` with ``ttl``."""
    return item_params(user_id, namespace, key) | {TTL: ttl, EXPIRES: checks.expiry(now, ttl)}
