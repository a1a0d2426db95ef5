"""`SqlStore`: LangGraph's `BaseStore` over the long-term SQL database, scoped to one user.

Every row carries the user it belongs to, and every statement is filtered by that user: which
user is decided per call (a fixed user from `SqlStore.for_user`, else the user of the LangGraph
run making the call), never by anything inside the namespace. Namespaces are stored without
the user, so a graph written for `InMemoryStore` works unchanged.

A batch costs few round trips whatever its size: one SELECT for all its gets, one statement
per search and per namespace listing, then (if anything changes) one transaction with a TTL
refresh, the deletes and the upserts, each sent as one executemany. Reads see the store as it
was before the batch's writes, as in LangGraph's own stores.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.store.base import (
    BaseStore,
    GetOp,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchOp,
)
from sqlalchemy import Select, delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from memory_tiers.bridge import LoopBridge
from memory_tiers.config import IdKeysConfig, StoreConfig
from memory_tiers.config_values import mask_url
from memory_tiers.context import read_id, resolve_ids
from memory_tiers.direct_sql import direct_sql
from memory_tiers.errors import BackendError, ConfigError, UsageError
from memory_tiers.ids import validate_id
from memory_tiers.long_term.engine import plan_for_values
from memory_tiers.long_term.schema import store_items as items
from memory_tiers.observability import get_logger
from memory_tiers.store import items as checks
from memory_tiers.store import namespaces
from memory_tiers.store.errors import StoreArgumentError, raising_our_namespace_error
from memory_tiers.store.filters import ParsedFilter, parse_filter
from memory_tiers.store.statements import COLUMNS, SEARCH_SHAPES, StoredRow, StoreStatements, scope
from memory_tiers.store.writes import StoreWrites
from memory_tiers.translate import translate_errors

if TYPE_CHECKING:
    from memory_tiers.direct_sql.on_aiosqlite import SqliteDirect
    from memory_tiers.direct_sql.on_asyncpg import AsyncpgDirect

logger = get_logger(__name__)

TIER = "long_term"
Pair = tuple[str, str]  # (namespace text, key)
Rows = Callable[[Select[Any], dict[str, Any]], Awaitable[Iterable[Any]]]  # runs one SELECT


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Batch:
    """A batch, validated and compiled before any I/O (so a bad op leaves nothing half done)."""

    size: int
    gets: list[tuple[int, Pair, bool]] = field(default_factory=list)
    searches: list[tuple[int, tuple[str, ...], ParsedFilter, int, int, bool]] = field(default_factory=list)
    listings: list[tuple[int, list[MatchCondition], int | None, int, int]] = field(default_factory=list)
    # The last write per item wins; None deletes. (value, ttl minutes) otherwise.
    writes: dict[Pair, tuple[dict[str, Any], float | None] | None] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    refresh: dict[Pair, float] = field(default_factory=dict)  # rows read -> the TTL they had


class SqlStore(BaseStore):
    """LangGraph's `BaseStore` on the long-term database, with TTLs and tenant scoping.

    Pass it to ``builder.compile(store=...)``; nodes reach it as ``runtime.store`` or
    ``get_store()``. Inside a run the store serves the run's user (``user_id`` in
    ``config["configurable"]`` or the runtime context); elsewhere use ``store.for_user(...)``.

    Args:
        engine: an `AsyncEngine` on SQLite (aiosqlite) or PostgreSQL (asyncpg) whose schema is
            current (``memory_tiers.long_term.migrate.upgrade``).
        config: TTL settings (``long_term.store`` in the configuration).
        ids: where runs carry their ids (``ids`` in the configuration).
        bridge: the loop bridge that serves synchronous calls (``graph.invoke``); without it
            only the async methods work.
        user_id: serve only this user (see `for_user`).
        index: must be None: semantic (vector) search is not supported.

    Raises:
        ConfigError: an index config was given, or the engine is neither SQLite nor PostgreSQL.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        engine: AsyncEngine,
        config: StoreConfig,
        *,
        ids: IdKeysConfig,
        bridge: LoopBridge | None = None,
        user_id: str | None = None,
        index: Any = None,
    ) -> None:
        if index is not None:
            raise ConfigError(
                "SqlStore does not support semantic search: leave `index` unset (search filters "
                "by namespace and value; a `query` argument is ignored)"
            )
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"the store needs SQLite or PostgreSQL, not {self.dialect!r}")
        self.engine = engine
        self.config = config
        self.ids = ids
        self.bridge = bridge
        self.user_id = None if user_id is None else validate_id("user_id", user_id)
        self.ttl_config = checks.ttl_config(config)
        self.index_config = None
        # The store's notion of "now" for timestamps and expiry; tests may replace it.
        self.clock: Callable[[], datetime] = _utc_now
        self._masked_url = mask_url(engine.url.render_as_string(hide_password=False))
        # Reads skip BEGIN/ROLLBACK round trips; writes get a transaction of their own.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sql = StoreStatements(self.dialect)  # shared by the `for_user` copies
        self._writes = StoreWrites(self.dialect)
        # The searches' shapes, and the get, upsert, delete and refresh sent the direct way.
        self._driver = direct_sql(engine, cache_size=SEARCH_SHAPES + 4, columns=COLUMNS)

    def _now(self) -> datetime:
        # In UTC, always: SQLite keeps the wall time without the offset, and compares text.
        return checks.utc(self.clock())

    def __repr__(self) -> str:
        scope = self.user_id or "<the run's user>"
        return f"SqlStore({self._masked_url}, user={scope})"

    def for_user(self, user_id: str) -> SqlStore:
        """A store sharing this one's engine that serves only ``user_id``, in or outside a run.

        Raises:
            InvalidIdentifierError: ``user_id`` is missing or malformed.
        """
        scoped = copy.copy(self)
        scoped.user_id = validate_id("user_id", user_id)
        return scoped

    # -- scope ----------------------------------------------------------------------------

    def _scope(self) -> str:
        """The user this call serves: the fixed one, else the current LangGraph run's."""
        if self.user_id is not None:
            return self.user_id
        try:
            config: RunnableConfig = get_config()
        except RuntimeError:
            raise UsageError(
                "the store is scoped to a user: call it from a graph run whose config names the user "
                f"(config['configurable']['{self.ids.user}']), or use store.for_user(user_id)"
            ) from None
        if read_id(config, self.ids.user) is None:
            raise UsageError(
                f"this run has no '{self.ids.user}' in config['configurable'] or its context, and "
                "the store keeps every item under a user: pass it, or use store.for_user(user_id)"
            )
        return resolve_ids(config, self.ids).user_id

    # -- the BaseStore contract -----------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` from synchronous code on the manager's loop; results in op order.

        Raises:
            UsageError: no bridge, the manager is closed, or called on the manager's own loop.
        """
        ops = list(ops)
        user_id = self._scope()
        plan = self._plan(ops)
        if self.bridge is None:
            raise UsageError(
                "this SqlStore has no loop bridge, so only its async methods work: use "
                "manager.store, or `await store.abatch(...)` / `graph.ainvoke(...)`"
            )
        return self.bridge.run(self._execute(user_id, plan))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` for the scoped user; results in op order."""
        ops = list(ops)
        user_id = self._scope()
        return await self._execute(user_id, self._plan(ops))

    # -- TTL sweeping ---------------------------------------------------------------------

    async def sweep_expired(self) -> int:
        """Delete every user's expired items; return how many were deleted."""
        stmt = delete(items).where(items.c.expires_at.is_not(None), items.c.expires_at <= self._now())
        with translate_errors(TIER, self._masked_url):
            async with self.engine.begin() as conn:
                await plan_for_values(conn)
                result = await conn.execute(stmt)
        return int(result.rowcount or 0)

    async def run_sweeper(self) -> None:
        """Every ``sweep_interval``, delete expired items, until cancelled.

        It waits an interval before the first sweep (as LangGraph's sweeper does): expired
        items are invisible anyway, and the application gets the database to itself while it
        starts. A failed sweep is logged and retried at the next interval. It returns at once
        when ``sweep_interval`` is null, or when the engine has a single shared connection
        (SQLite ``:memory:``), where a background transaction would interleave with the
        application's on that one connection.
        """
        interval = self.config.sweep_interval
        if interval is None or isinstance(self.engine.pool, StaticPool | SingletonThreadPool):
            return
        while True:
            await asyncio.sleep(interval.total_seconds())
            try:
                deleted = await self.sweep_expired()
                if deleted:
                    logger.debug("store sweeper deleted %d expired items", deleted)
            except BackendError:
                logger.warning("store TTL sweep failed; retrying in %s", interval, exc_info=True)

    # -- planning -------------------------------------------------------------------------

    def _plan(self, ops: list[Op]) -> _Batch:
        plan = _Batch(size=len(ops), results=[None] * len(ops))
        for index, op in enumerate(ops):
            if isinstance(op, GetOp):
                pair = (
                    namespaces.to_text(namespaces.validate_namespace(op.namespace)),
                    checks.check_key(op.key),
                )
                plan.gets.append((index, pair, bool(op.refresh_ttl)))
            elif isinstance(op, SearchOp):
                prefix = namespaces.validate_namespace(op.namespace_prefix)
                limit, offset = checks.check_page(op.limit, op.offset)
                parsed = parse_filter(op.filter, self.dialect)
                # A query asks for semantic ranking, which needs an index: like LangGraph's SQL
                # stores without one, it is ignored and the filters alone decide.
                plan.searches.append((index, prefix, parsed, limit, offset, bool(op.refresh_ttl)))
            elif isinstance(op, ListNamespacesOp):
                conditions = namespaces.validate_match_conditions(op.match_conditions)
                limit, offset = checks.check_page(op.limit, op.offset)
                plan.listings.append((index, conditions, checks.check_max_depth(op.max_depth), limit, offset))
            elif isinstance(op, PutOp):
                deleting = op.value is None
                namespace = namespaces.validate_namespace(op.namespace, for_put=not deleting)
                pair = (namespaces.to_text(namespace), checks.check_key(op.key))
                plan.writes.pop(pair, None)  # keep the dict in the order of the last writes
                plan.writes[pair] = (
                    None if deleting else (checks.check_value(op.value), checks.check_ttl(op.ttl))
                )
            else:
                raise StoreArgumentError(f"unknown store operation: {type(op).__name__}")
        return plan

    # -- execution ------------------------------------------------------------------------

    async def _execute(self, user_id: str, plan: _Batch) -> list[Result]:
        if not plan.size:
            return plan.results
        now = self._now()
        live = scope(user_id, now)
        with translate_errors(TIER, self._masked_url):
            if plan.gets or plan.searches or plan.listings:
                await self._read(live, plan)
            for pair in plan.writes:
                plan.refresh.pop(pair, None)  # its write sets a new expiry anyway
            if self._driver is not None and len(plan.writes) + len(plan.refresh) == 1:
                # `aput`, `adelete`, or a lone read's TTL refresh
                await self._write_alone(self._driver, user_id, now, plan)
            elif plan.writes or plan.refresh:
                async with self.engine.begin() as conn:
                    await self._write(conn, user_id, now, plan)
        return plan.results

    async def _read(self, live: dict[str, Any], plan: _Batch) -> None:
        """The batch's reads: a lone get or search straight on the driver, else on one
        SQLAlchemy connection."""
        if self._driver is not None and len(plan.gets) + len(plan.searches) == 1 and not plan.listings:
            driver = self._driver

            async def direct(stmt: Select[Any], params: dict[str, Any]) -> Iterable[Any]:
                # asyncpg's records and SqliteDirect's dicts both give their values in column order.
                return [StoredRow._make(row.values()) for row in await driver.rows(stmt, params)]

            await self._read_with(direct, live, plan)  # `aget`, `asearch`
            return
        async with self._reader.connect() as conn:

            async def rows(stmt: Select[Any], params: dict[str, Any]) -> Iterable[Any]:
                return await conn.execute(stmt, params)

            await self._read_with(rows, live, plan)

    async def _read_with(self, rows: Rows, live: dict[str, Any], plan: _Batch) -> None:
        if plan.gets:
            await self._read_gets(rows, live, plan)
        if plan.searches:
            await self._read_searches(rows, live, plan)
        if plan.listings:
            await self._read_listings(rows, live, plan)

    async def _read_gets(self, rows: Rows, live: dict[str, Any], plan: _Batch) -> None:
        pairs = list(dict.fromkeys(pair for _, pair, _ in plan.gets))
        found: dict[Pair, Any] = {}
        for stmt, params in self._sql.gets(pairs):
            found.update(((row.namespace, row.key), row) for row in await rows(stmt, params | live))
        for index, pair, refresh_ttl in plan.gets:
            row = found.get(pair)
            if row is not None:
                plan.results[index] = checks.to_item(row)
                if refresh_ttl and row.ttl_minutes is not None:
                    plan.refresh[pair] = row.ttl_minutes

    async def _read_searches(self, rows: Rows, live: dict[str, Any], plan: _Batch) -> None:
        for index, prefix, parsed, limit, offset, refresh_ttl in plan.searches:
            stmt = self._sql.search(bool(prefix), parsed.shape)
            page = list(
                await rows(stmt, {**live, **self._sql.search_params(prefix, limit, offset), **parsed.params})
            )
            plan.results[index] = [checks.to_search_item(row) for row in page]
            if refresh_ttl:
                plan.refresh.update(
                    ((row.namespace, row.key), row.ttl_minutes) for row in page if row.ttl_minutes is not None
                )

    async def _read_listings(self, rows: Rows, live: dict[str, Any], plan: _Batch) -> None:
        column, where = items.c.namespace, self._sql.live
        for index, conditions, max_depth, limit, offset in plan.listings:
            if self.dialect == "postgresql":
                stmt = namespaces.pg_listing(column, where, conditions, max_depth, limit, offset)
                plan.results[index] = [tuple(row[0]) for row in await rows(stmt, live)]
            else:
                candidates = (
                    row[0]
                    for row in await rows(namespaces.sqlite_candidates(column, where, conditions), live)
                )
                plan.results[index] = namespaces.select_namespaces(
                    candidates, conditions, max_depth, limit, offset
                )

    async def _write(self, conn: AsyncConnection, user_id: str, now: datetime, plan: _Batch) -> None:
        """A batch's writes in its transaction, each statement sent once for all its rows."""
        for write in self._writes.statements(user_id, now, plan.refresh, plan.writes):
            await conn.execute(write.statement, write.rows)

    async def _write_alone(
        self, driver: AsyncpgDirect | SqliteDirect, user_id: str, now: datetime, plan: _Batch
    ) -> None:
        """A batch's one write (a put, a delete or a TTL refresh): one statement straight on the
        driver. On asyncpg it is sent outside a transaction, so PostgreSQL commits it by itself
        (one round trip, not three); on aiosqlite the statement and its commit are one hop to
        the driver's thread, against SQLAlchemy's six or seven."""
        ((statement, (row,), column_keys),) = self._writes.statements(user_id, now, plan.refresh, plan.writes)
        await driver.execute(statement, row, column_keys)


# LangGraph's public methods check namespaces before calling abatch and raise its own error;
# re-raise it as ours, which is both that error and an InvalidIdentifierError.
for _name in ("get", "search", "put", "delete", "list_namespaces"):
    for _method in (_name, f"a{_name}"):
        setattr(SqlStore, _method, raising_our_namespace_error(getattr(BaseStore, _method)))
