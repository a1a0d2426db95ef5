"""Migrating every thread at once: the registry is walked in batches, each thread is migrated
all-or-nothing, and a rerun skips what is already current, so an interrupted run is resumed by
running it again."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy import func, select

from memory_tiers.errors import StateSchemaError
from memory_tiers.long_term.schema import threads
from memory_tiers.long_term.store import TIER, LongTermStore
from memory_tiers.observability import get_logger
from memory_tiers.state.checkpoints import check_not_newer, plan_upgrade, state_version, upgrade_checkpoint
from memory_tiers.state.migrators import StateMigrator
from memory_tiers.translate import translate_errors

logger = get_logger(__name__)

DEFAULT_CONCURRENCY = 4
"""Threads a bulk migration reads and writes at once: enough to overlap the round trips, few
enough to leave most of a pool (PostgreSQL's default holds 10) to live traffic beside it."""


@dataclass
class MigrationReport:
    """What a bulk migration found and did.

    Attributes:
        before: threads per state version before the run.
        after: threads per state version after it (for a dry run: what it would leave).
        migrated: threads brought forward (for a dry run: that would be).
        failed: thread id -> why it was left as it was (a failing step or validation, or a
            state newer than this code).
        dry_run: whether anything was written.
    """

    before: Counter[int] = field(default_factory=Counter)
    after: Counter[int] = field(default_factory=Counter)
    migrated: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


def _scope(user_id: str | None) -> list[Any]:
    return [] if user_id is None else [threads.c.user_id == user_id]


async def count_threads(store: LongTermStore, user_id: str | None = None) -> int:
    """Registered threads (of one user, or all)."""
    with translate_errors(TIER, store.masked_url):
        async with store.engine.connect() as conn:
            return int(
                await conn.scalar(select(func.count()).select_from(threads).where(*_scope(user_id))) or 0
            )


async def thread_id_batches(
    store: LongTermStore, *, user_id: str | None = None, batch_size: int = 100
) -> AsyncIterator[list[str]]:
    """Registered thread ids in id order, ``batch_size`` at a time (keyset pagination)."""
    after: str | None = None
    while True:
        stmt = select(threads.c.thread_id).where(*_scope(user_id))
        if after is not None:
            stmt = stmt.where(threads.c.thread_id > after)
        stmt = stmt.order_by(threads.c.thread_id).limit(batch_size)
        with translate_errors(TIER, store.masked_url):
            async with store.engine.connect() as conn:
                batch = list((await conn.scalars(stmt)).all())
        if not batch:
            return
        yield batch
        after = batch[-1]


async def migrate_threads(
    saver: BaseCheckpointSaver[Any],
    store: LongTermStore,
    migrator: StateMigrator,
    current_version: int,
    *,
    user_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = 100,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Bring every registered thread's latest checkpoint to ``current_version``: each batch's
    threads ``concurrency`` at a time. A backend error stops the run once the threads in flight
    are done, and is raised; the threads migrated so far stay migrated."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    report = MigrationReport(dry_run=dry_run)
    gate = asyncio.Semaphore(concurrency)
    errors: list[Exception] = []

    async def migrate_thread(thread_id: str) -> None:
        tup = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        if tup is not None:
            version = state_version(tup, migrator.initial_version)
            report.before[version] += 1
            report.after[await _migrate_one(saver, tup, migrator, current_version, thread_id, report)] += 1

    async def migrate(thread_id: str) -> None:
        async with gate:
            if errors:  # a thread before this one failed: start no more
                return
            try:
                await migrate_thread(thread_id)
            except Exception as exc:  # raised once the threads in flight are done
                errors.append(exc)
                return
        if progress is not None:
            progress(1)

    async for batch in thread_id_batches(store, user_id=user_id, batch_size=batch_size):
        await asyncio.gather(*(migrate(thread_id) for thread_id in batch))
        for other in errors[1:]:
            logger.warning("bulk migration: a thread in flight also failed: %r", other)
        if errors:
            raise errors[0]
    return report


async def _migrate_one(
    saver: BaseCheckpointSaver[Any],
    tup: Any,
    migrator: StateMigrator,
    current_version: int,
    thread_id: str,
    report: MigrationReport,
) -> int:
    """Migrate one thread; returns the version it is left at."""
    version = state_version(tup, migrator.initial_version)
    if version == current_version:
        return version
    try:
        check_not_newer(tup, migrator, current_version)
        if report.dry_run:
            await plan_upgrade(saver, tup, migrator, current_version)
        else:
            await upgrade_checkpoint(saver, tup, migrator, current_version)
    except StateSchemaError as exc:
        report.failed[thread_id] = str(exc)
        return version
    report.migrated += 1
    return current_version
