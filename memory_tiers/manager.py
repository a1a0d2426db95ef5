"""`MemoryManager`: opens the three tiers, composes them, and hands out nodes and APIs.

The manager holds no tier logic: the checkpointer is LangGraph's, sessions live in
`SessionStore`, long-term memory in `LongTermStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from langchain_core.embeddings import Embeddings
from langgraph.checkpoint.base import BaseCheckpointSaver
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_tiers.bridge import LoopBridge
from memory_tiers.config import MemoryTiersConfig, load_config, load_yaml
from memory_tiers.errors import ConfigError, UsageError
from memory_tiers.extractors.base import FactExtractor
from memory_tiers.extractors.registry import build_extractors
from memory_tiers.ids import validate_id
from memory_tiers.learning import Learner
from memory_tiers.long_term import migrate
from memory_tiers.long_term.recall import load_embeddings
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.nodes import MemoryNodes
from memory_tiers.observability import Metrics, Telemetry
from memory_tiers.retention import RetentionAPI
from memory_tiers.session.store import SessionStore
from memory_tiers.sessions import SessionsAPI
from memory_tiers.state.bulk import DEFAULT_CONCURRENCY, MigrationReport, migrate_threads
from memory_tiers.state.checkpoints import WRITER_VERSION_KEY, upgrader
from memory_tiers.state.migrators import StateMigrator, load_migrator
from memory_tiers.store import SqlStore
from memory_tiers.summarizers import build_summarizer
from memory_tiers.threads import ThreadsAPI
from memory_tiers.users import UsersAPI
from memory_tiers.working.checkpointer import open_checkpointer, setup_checkpointer
from memory_tiers.working.fencing import CheckpointFence, thread_heads
from memory_tiers.working.guard import OwnershipGuardedSaver, guard_checkpointer


class MemoryManager:
    """Three-tier memory for LangGraph agents.

    Args:
        config: a `MemoryTiersConfig`, a dict of the same shape, or None for the embedded
            defaults (SQLite checkpoints and long-term memory under ``./.memory_tiers/``,
            sessions in an in-process fakeredis).
        checkpointer: a LangGraph checkpointer you already have, used instead of opening one.
        redis: a ``redis.asyncio.Redis`` client (``decode_responses=True``) for sessions.
        engine: a SQLAlchemy `AsyncEngine` for long-term memory.
        embeddings: a LangChain ``Embeddings`` for semantic recall (instead of naming one in
            ``long_term.recall.semantic.embeddings``).
        state_migrator: a `StateMigrator` bringing older threads to ``state.version`` (instead
            of naming one in ``state.migrators``).
        tracer_provider: an OpenTelemetry ``TracerProvider`` for the manager's spans, instead
            of the global one (see ``docs/observability.md``).
        meter_provider: an OpenTelemetry ``MeterProvider`` for its counters, instead of the
            global one.

    Clients passed in are used as they are and left open on exit.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with MemoryManager({"working": {"backend": "memory"},
        ...                               "long_term": {"url": "sqlite+aiosqlite:///:memory:"}}) as m:
        ...         await m.long_term.patch_profile("alice", {"name": "Alice"})
        ...         return (await m.long_term.get_profile("alice")).document
        >>> asyncio.run(main())
        {'name': 'Alice'}
    """

    def __init__(
        self,
        config: MemoryTiersConfig | dict[str, Any] | None = None,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        redis: aioredis.Redis | None = None,
        engine: AsyncEngine | None = None,
        embeddings: Embeddings | None = None,
        state_migrator: StateMigrator | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.config = load_config(config)
        self.telemetry = Telemetry(
            include_user_id=self.config.observability.include_user_id,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        semantic = self.config.long_term.recall.semantic
        if embeddings is None and semantic.embeddings is not None:
            embeddings = load_embeddings(semantic.embeddings)
        self.embeddings = embeddings
        state = self.config.state
        self.state_migrator = state_migrator or load_migrator(
            migrators=state.migrators,
            model=state.model,
            version=state.version,
            initial_version=state.initial_version,
            key="state",
        )
        if state_migrator is not None:
            state_migrator.check(state.version)
        self.extractors: list[FactExtractor] = build_extractors(self.config.long_term.extractor_specs())
        self.learner = Learner(
            self.extractors,
            self.config.long_term.extraction,
            lambda: self.long_term_store,
            metrics=self.metrics,
        )
        self.nodes = MemoryNodes(self)
        self.sessions = SessionsAPI(self)
        self.summarizer = build_summarizer(self.config.working.archive.summarizer)
        self.threads = ThreadsAPI(self)
        self.retention = RetentionAPI(self)
        self.users = UsersAPI(self)
        self.bridge = LoopBridge()
        self._given_checkpointer = checkpointer
        self._given_redis = redis
        self._given_engine = engine
        self._stack: AsyncExitStack | None = None
        self._checkpointer: OwnershipGuardedSaver | None = None
        self._session_store: SessionStore | None = None
        self._long_term_store: LongTermStore | None = None
        self._store: SqlStore | None = None
        self._portal: BlockingPortal | None = None
        self._portal_cm: Any = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **clients: Any) -> MemoryManager:
        """Build a manager from a YAML file (``${VAR}`` expanded, env overrides applied)."""
        return cls(load_yaml(path), **clients)

    @classmethod
    def from_config(cls, config: MemoryTiersConfig | dict[str, Any], **clients: Any) -> MemoryManager:
        """Build a manager from a config model or a dict of the same shape."""
        return cls(load_config(config), **clients)

    @property
    def metrics(self) -> Metrics:
        """This manager's counters: ``manager.metrics.snapshot()`` (the same increments go to
        OpenTelemetry counters; see ``docs/observability.md``)."""
        return self.telemetry.metrics

    @property
    def data_dir(self) -> Path:
        """Where the embedded backends keep their files."""
        return self.config.data_dir

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> MemoryManager:
        if self._stack is not None:
            raise UsageError("this MemoryManager is already open")
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self.bridge.bind()
        return self

    async def _open(self, stack: AsyncExitStack) -> None:
        cfg = self.config
        auto = cfg.setup == "auto"
        if self._given_engine is not None:
            self._long_term_store = LongTermStore(
                self._given_engine, cfg.long_term, embeddings=self.embeddings, telemetry=self.telemetry
            )
        else:
            self._long_term_store = await stack.enter_async_context(
                LongTermStore.open(
                    cfg.long_term, cfg.data_dir, embeddings=self.embeddings, telemetry=self.telemetry
                )
            )
        await self._check_long_term_schema(upgrade=auto)
        self._store = SqlStore(
            self._long_term_store.engine, cfg.long_term.store, ids=cfg.ids, bridge=self.bridge
        )
        # The sweepers serve the process, not the caller: a fresh context keeps the opener's
        # log ids and current span (a request's, when opened lazily) off their records.
        sweeper = asyncio.get_running_loop().create_task(
            self._store.run_sweeper(), name="memory-tiers-ttl-sweeper", context=contextvars.Context()
        )
        stack.push_async_callback(_cancel, sweeper)
        archive = self.sessions.archive_target
        if self._given_redis is not None:
            self._session_store = SessionStore.from_config(
                self._given_redis, cfg.session, archive=archive, telemetry=self.telemetry
            )
        else:
            self._session_store = await stack.enter_async_context(
                SessionStore.open(cfg.session, archive=archive, telemetry=self.telemetry)
            )
        session_sweeper = asyncio.get_running_loop().create_task(
            self._session_store.run_sweeper(cfg.session.sweep_interval),
            name="memory-tiers-session-sweeper",
            context=contextvars.Context(),
        )
        stack.push_async_callback(_cancel, session_sweeper)
        if self._given_checkpointer is not None:
            saver = self._given_checkpointer
        else:
            saver = await stack.enter_async_context(open_checkpointer(cfg.working, cfg.data_dir, setup=auto))
        self._checkpointer = guard_checkpointer(
            saver,
            keys=cfg.ids,
            owner_of=self._long_term_store.thread_owner,
            claim=self._long_term_store.claim_thread,
            bridge=self.bridge,
            on_load=self._state_upgrader(saver),
            stamp={WRITER_VERSION_KEY: cfg.state.version},
            fence=self._fence(saver),
        )

    def _fence(self, saver: BaseCheckpointSaver[Any]) -> CheckpointFence | None:
        """Fenced checkpoint writes (``working.fencing``), heads on the session tier's Redis."""
        if not self.config.working.fencing:
            return None
        store = self.session_store
        return CheckpointFence(
            thread_heads(store.client, store.keys, store.masked_url),
            saver,
            degrade=self.config.session.on_unavailable == "degrade",
            on_degraded=lambda error: self.metrics.add(
                "degradations", attributes={"memory_tiers.tier": "session", "memory_tiers.operation": "fence"}
            ),
        )

    def _state_upgrader(self, saver: BaseCheckpointSaver[Any]) -> Any:
        migrator, version = self.state_migrator, self.config.state.version
        if not migrator.versions and migrator.initial_version == version:
            return None  # nothing could ever be migrated: no hook, no cost
        return upgrader(saver, migrator, version)

    async def _check_long_term_schema(self, *, upgrade: bool) -> None:
        store = self.long_term_store
        if await store.schema_revision() == migrate.head_revision():
            return
        if not upgrade:
            raise ConfigError(
                "setup is 'manual' and the long-term schema is not current: run "
                "`memory-tiers db upgrade` (or `await manager.setup()`)"
            )
        await store.upgrade_schema()

    async def setup(self) -> None:
        """Create or migrate every tier's schema (idempotent). Needed when ``setup: manual``."""
        await self.long_term_store.upgrade_schema()
        await setup_checkpointer(self.checkpointer.inner, self.config.working)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            # Deferred learning still holds submitted turns: finish them while the stores are open.
            await self.flush()
        stack, self._stack = self._stack, None
        self.bridge.unbind()
        self._checkpointer = self._session_store = self._long_term_store = self._store = None
        if stack is not None:
            await stack.aclose()

    async def migrate_threads(
        self,
        *,
        user_id: str | None = None,
        dry_run: bool = False,
        batch_size: int = 100,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Callable[[int], None] | None = None,
    ) -> MigrationReport:
        """Bring every registered thread (or one user's) to ``state.version``.

        Threads are walked through the registry in batches and each is migrated all-or-nothing;
        a failing thread is reported and left as it was, the others go on. Running it again
        resumes: threads already current are only counted.

        Args:
            user_id: only this user's threads.
            dry_run: run the migrations in memory and report, writing nothing.
            batch_size: thread ids read from the registry per query.
            concurrency: threads migrated at once (each a read and a write of its checkpoint).
            progress: called with 1 after each thread (for a progress bar).
        """
        if user_id is not None:
            validate_id("user_id", user_id)
        return await migrate_threads(
            self.checkpointer.inner,
            self.long_term_store,
            self.state_migrator,
            self.config.state.version,
            user_id=user_id,
            dry_run=dry_run,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
        )

    async def flush(self) -> None:
        """Finish deferred learning now (``long_term.extraction.mode: deferred``)."""
        await self.learner.deferred.flush()

    def __enter__(self) -> MemoryManager:
        """Open the manager for synchronous code: its connections live on a background loop."""
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self.__aenter__)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        portal, portal_cm = self._portal, self._portal_cm
        self._portal = self._portal_cm = None
        if portal is None:
            return
        try:
            portal.call(self.__aexit__, exc_type, exc, tb)
        finally:
            portal_cm.__exit__(exc_type, exc, tb)

    def run(self, coro: Any) -> Any:
        """Run one of the manager's coroutines from synchronous code (after ``with manager:``)."""
        return self.bridge.run(coro)

    def middleware(self, **options: Any) -> Any:
        """A LangChain ``create_agent`` middleware giving the agent this manager's memory:
        ``create_agent(model, tools, middleware=[manager.middleware()], checkpointer=manager.checkpointer)``.

        Options go to `memory_tiers.integrations.middleware.MemoryMiddleware` (``tools=True``
        adds the memory tools). Needs ``pip install 'memory-tiers[llm]'``.

        Raises:
            MissingDependencyError: the ``langchain`` package is not installed.
        """
        from memory_tiers.integrations.middleware import MemoryMiddleware

        return MemoryMiddleware(self, **options)

    # -- the tiers ----------------------------------------------------------------------

    def _opened(self, value: Any, name: str) -> Any:
        if value is None:
            raise UsageError(f"manager.{name} is available inside `async with manager:`")
        return value

    @property
    def checkpointer(self) -> OwnershipGuardedSaver:
        """The working tier: pass it to ``builder.compile(checkpointer=...)``.

        It is LangGraph's saver for the configured backend behind an ownership guard: a run
        whose config names a user can only read and write that user's threads, and a new
        thread is registered to the first user who writes to it. Each write of a run is fenced
        (``working.fencing``): a run that another run of the thread overtook raises
        `ThreadConflictError` with nothing written (see ``docs/locking.md``).
        """
        return self._opened(self._checkpointer, "checkpointer")

    @property
    def session_store(self) -> SessionStore:
        """The short-term tier's store."""
        return self._opened(self._session_store, "session_store")

    @property
    def long_term(self) -> LongTermStore:
        """The long-term tier: profiles, facts, threads and archives, all owner-scoped."""
        return self._opened(self._long_term_store, "long_term")

    long_term_store = long_term

    @property
    def store(self) -> SqlStore:
        """The long-term database as a LangGraph ``BaseStore``: pass it to
        ``builder.compile(store=...)``. Items are scoped to the run's user (or use
        ``manager.store.for_user(user_id)`` outside a run); expired items are swept while the
        manager is open."""
        return self._opened(self._store, "store")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
