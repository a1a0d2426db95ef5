"""The SELECTs the store runs for gets and searches, built once per shape with every value bound.

A statement built per call costs more Python than its round trip: SQLAlchemy builds the
expression tree and then hashes it to find the compiled form. These are built once (a search
once per filter shape, see `memory_tiers.store.filters`), so SQLAlchemy reuses their cache key
and compiled SQL, and asyncpg its prepared statement. Every one is scoped by ``:s_user``,
a parameter without a default: a call that does not bind the user fails instead of reading
every user's rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Boolean, ColumnElement, Select, bindparam, func, select, true, tuple_

from memory_tiers.long_term.schema import store_items as items
from memory_tiers.store import namespaces
from memory_tiers.store.filters import FilterShape, build_terms

USER, NOW = "s_user", "s_now"
NAMESPACE, KEY, PAIRS = "s_namespace", "s_key", "s_pairs"
PREFIX_BINDS = namespaces.PrefixBinds("s_prefix", "s_prefix_lower", "s_prefix_upper")  # their names
LIMIT, OFFSET = "s_limit", "s_offset"
SEARCH_SHAPES = 256  # filter shapes kept per store: a graph uses a handful
GET_CHUNK = 500  # (namespace, key) pairs per SELECT: two bind parameters each
COLUMNS = (
    items.c.namespace,
    items.c.key,
    items.c.value,
    items.c.created_at,
    items.c.updated_at,
    items.c.ttl_minutes,
)


class StoredRow(NamedTuple):
    """A row of `COLUMNS`, read as SQLAlchemy's rows read it."""

    namespace: str
    key: str
    value: Any
    created_at: Any
    updated_at: Any
    ttl_minutes: float | None


def live_rows() -> list[ColumnElement[bool]]:
    """The scoped user's unexpired rows (``:s_user``, ``:s_now``).

    Unexpired is ``COALESCE(expires_at > :now, true)``, not ``expires_at IS NULL OR ...``: the
    same rows, but PostgreSQL cannot answer it from the expiry index, which it otherwise may
    (with stale statistics) AND with the user's primary-key range, reading every item's
    index entry of every user (4 ms instead of 0.4 ms at 100k items).
    """
    return [
        items.c.user_id == bindparam(USER, required=True),
        func.coalesce(items.c.expires_at > bindparam(NOW, required=True), true(), type_=Boolean),
    ]


def scope(user_id: str, now: Any) -> dict[str, Any]:
    """The parameters of `live_rows`."""
    return {USER: user_id, NOW: now}


class StoreStatements:
    """The store's reads on one dialect: the gets, and a bounded cache of searches by shape."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.live = live_rows()
        self.get_one = select(*COLUMNS).where(
            *self.live, items.c.namespace == bindparam(NAMESPACE), items.c.key == bindparam(KEY)
        )
        self.get_many = select(*COLUMNS).where(
            *self.live, tuple_(items.c.namespace, items.c.key).in_(bindparam(PAIRS, expanding=True))
        )
        self.search = functools.lru_cache(maxsize=SEARCH_SHAPES)(self._build_search)

    def gets(self, pairs: list[tuple[str, str]]) -> Iterator[tuple[Select[Any], dict[str, Any]]]:
        """The SELECTs (and their parameters, but the scope's) reading ``pairs``."""
        if len(pairs) == 1:
            ((namespace, key),) = pairs
            yield self.get_one, {NAMESPACE: namespace, KEY: key}
            return
        for start in range(0, len(pairs), GET_CHUNK):
            yield self.get_many, {PAIRS: pairs[start : start + GET_CHUNK]}

    def _build_search(self, under_prefix: bool, shape: FilterShape) -> Select[Any]:
        """A search below ``:s_prefix`` (if ``under_prefix``) for filters of ``shape``."""
        namespace, key = items.c.namespace, items.c.key
        if self.dialect == "postgresql":  # ties break bytewise on both dialects
            namespace, key = namespace.collate("C"), key.collate("C")  # type: ignore[assignment]
        prefix = (
            [
                namespaces.under_prefix_of(
                    items.c.namespace, *(bindparam(name) for name in PREFIX_BINDS), self.dialect
                )
            ]
            if under_prefix
            else []
        )
        # Most recently updated first, as LangGraph's PostgreSQL and SQLite stores order.
        return (
            select(*COLUMNS)
            .where(*self.live, *prefix, *build_terms(shape, items.c.value, self.dialect))
            .order_by(items.c.updated_at.desc(), namespace, key)
            .limit(bindparam(LIMIT, type_=BigInteger))
            .offset(bindparam(OFFSET, type_=BigInteger))
        )

    def search_params(self, prefix: tuple[str, ...], limit: int, offset: int) -> dict[str, Any]:
        """The prefix and page parameters of a search (the filter binds its own)."""
        params: dict[str, Any] = {LIMIT: limit, OFFSET: offset}
        if prefix:
            params.update(zip(PREFIX_BINDS, namespaces.prefix_binds(prefix), strict=True))
        return params
