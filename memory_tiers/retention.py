"""`manager.retention`: apply ``working.retention`` to every registered thread, on any backend.

A run has two phases, each walking the thread registry in bounded batches (keyset pagination,
never a checkpoint scan):

1. idle threads (no activity for ``max_idle``) are archived or deleted; the idleness is checked
   again in the same UPDATE that claims the thread, so a thread that just came back to life is
   left alone;
2. threads active since they were last pruned keep their newest ``keep_last`` checkpoints per
   namespace, plus every older one a kept checkpoint needs (delta channels, old-format sends);
   each registry batch is planned from one read of its chains (ids, versions and metadata, no
   values), pruned in one transaction (SQLite, PostgreSQL) and marked pruned in one UPDATE;
   the next batch is read while one is pruned (two batches in flight at most);
3. expired sessions are archived into long-term memory (one pass of the session sweeper).

Every step is idempotent, so a run stopped at any point is resumed by running it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from memory_tiers.config import RetentionRule
from memory_tiers.errors import MemoryTiersError
from memory_tiers.long_term.models import ThreadRecord
from memory_tiers.observability import get_logger, instrumented, manager_telemetry
from memory_tiers.threads_archive import archive_thread
from memory_tiers.working.chain import plan_prune
from memory_tiers.working.pruning import prune_threads, read_chains
from memory_tiers.working.thread_data import delete_checkpoints

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

logger = get_logger(__name__)


@dataclass
class RetentionReport:
    """What a retention run did (or, for a dry run, would do).

    Attributes:
        archived: idle threads archived.
        deleted: idle threads deleted.
        pruned_threads: threads that had checkpoints pruned.
        pruned_checkpoints: checkpoints removed.
        sessions_archived: expired sessions archived into long-term memory (not in a dry run).
        failed: thread id -> why it was left as it was.
        dry_run: whether anything was written.
    """

    archived: int = 0
    deleted: int = 0
    pruned_threads: int = 0
    pruned_checkpoints: int = 0
    sessions_archived: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


@dataclass(frozen=True)
class _Scope:
    """The threads one rule applies to: some namespaces, or all but the excluded ones."""

    rule: RetentionRule
    namespaces: list[str] | None
    exclude: list[str]


@instrumented("retention", telemetry=manager_telemetry, bind=True)
class RetentionAPI:
    """Runs the configured retention policies for one manager."""

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager

    def _scopes(self) -> list[_Scope]:
        config = self._manager.config.working.retention
        listed = sorted(config.namespaces)
        scopes = [_Scope(config.rule_for(None), None, listed)]
        scopes += [_Scope(config.rule_for(ns), [ns], []) for ns in listed]
        return scopes

    async def run(
        self, *, dry_run: bool = False, progress: Callable[[int], None] | None = None
    ) -> RetentionReport:
        """Apply every policy once.

        Args:
            dry_run: count what would be archived, deleted and pruned; write nothing.
            progress: called with the number of threads handled after each thread or batch
                (for a progress bar).
        """
        report = RetentionReport(dry_run=dry_run)
        started = datetime.now(UTC)
        tick = progress or (lambda _n: None)
        for scope in self._scopes():
            if scope.rule.max_idle is not None:
                async for record in self._idle(scope, started - scope.rule.max_idle):
                    await self._guarded(report, record, self._expire(report, record, scope.rule, started))
                    tick(1)
            if scope.rule.keep_last is not None:
                keep_last = scope.rule.keep_last

                async def prune(batch: list[ThreadRecord], keep_last: int = keep_last) -> None:
                    await self._prune_batch(report, batch, keep_last, started)
                    tick(len(batch))

                await _overlapped(self._unpruned(scope), prune)
        if not dry_run:
            # Also done periodically while the manager is open; here for deployments that
            # run retention as a job instead.
            report.sessions_archived = await self._manager.sessions.sweep()
        return report

    async def _guarded(self, report: RetentionReport, record: ThreadRecord, step: object) -> None:
        try:
            await step  # type: ignore[misc]
        except MemoryTiersError as exc:
            logger.warning("retention left thread %s as it was: %s", record.thread_id, exc)
            report.failed[record.thread_id] = f"{type(exc).__name__}: {exc}"

    async def _idle(self, scope: _Scope, before: datetime) -> AsyncIterator[ThreadRecord]:
        registry = self._manager.long_term.registry
        size = self._manager.config.working.retention.batch_size
        after: tuple[datetime, str] | None = None
        while batch := await registry.idle(
            namespaces=scope.namespaces, exclude=scope.exclude, before=before, limit=size, after=after
        ):
            for record in batch:
                yield record
            after = (batch[-1].last_active_at, batch[-1].thread_id)

    async def _unpruned(self, scope: _Scope) -> AsyncIterator[list[ThreadRecord]]:
        registry = self._manager.long_term.registry
        size = self._manager.config.working.retention.batch_size
        after: str | None = None
        while batch := await registry.unpruned(
            namespaces=scope.namespaces, exclude=scope.exclude, limit=size, after=after
        ):
            yield batch
            after = batch[-1].thread_id

    async def _expire(
        self, report: RetentionReport, record: ThreadRecord, rule: RetentionRule, now: datetime
    ) -> None:
        assert rule.max_idle is not None
        cutoff = now - rule.max_idle
        if rule.on_idle == "archive":
            if report.dry_run or await archive_thread(self._manager, record, idle_before=cutoff):
                report.archived += 1
            return
        if report.dry_run:
            report.deleted += 1
            return
        registry = self._manager.long_term.registry
        if not await registry.set_status(
            record.thread_id, "archiving", expected=["active", "archiving"], idle_before=cutoff
        ):
            return  # active again since the scan
        await delete_checkpoints(self._manager.checkpointer, record.thread_id)
        await registry.remove(record.user_id, record.thread_id)
        report.deleted += 1

    async def _prune_batch(
        self, report: RetentionReport, records: list[ThreadRecord], keep_last: int, started: datetime
    ) -> None:
        """Prune a registry batch at once; if that fails, each of its threads on its own, so a
        failure is the failing thread's only."""
        if len(records) > 1:
            try:
                await self._prune(report, records, keep_last, started)
                return
            except MemoryTiersError as exc:
                logger.info("retention: a batch failed (%s); pruning its threads one by one", exc)
        for record in records:
            await self._guarded(report, record, self._prune(report, [record], keep_last, started))

    async def _prune(
        self, report: RetentionReport, records: Sequence[ThreadRecord], keep_last: int, started: datetime
    ) -> None:
        saver = self._manager.checkpointer.inner
        thread_ids = [record.thread_id for record in records]
        chains = await read_chains(saver, thread_ids)
        plans = {t: plan for t in thread_ids if (plan := plan_prune(chains[t], keep_last)).checkpoints}
        if not report.dry_run:
            await prune_threads(saver, plans)
            self._manager.metrics.add("checkpoints_pruned", sum(p.checkpoints for p in plans.values()))
        report.pruned_threads += len(plans)
        report.pruned_checkpoints += sum(plan.checkpoints for plan in plans.values())
        if not report.dry_run:
            # The run's start, not now: a turn written during the prune is pruned next time.
            await self._manager.long_term.registry.mark_pruned(thread_ids, started)


async def _overlapped(
    batches: AsyncIterator[list[ThreadRecord]], handle: Callable[[list[ThreadRecord]], Awaitable[None]]
) -> None:
    """``handle`` each batch, the next one (its registry read, its chains' read) while the one
    before is still being pruned: two at most, so one batch's reads overlap the previous one's
    DELETE on the server. On an error no new batch is started, the other batch in flight is
    finished (each prune is one transaction), then the error is raised; a cancelled run cancels
    both."""
    in_flight: list[asyncio.Task[None]] = []
    try:
        async for batch in batches:
            if any(task.done() and task.exception() is not None for task in in_flight):
                break  # the newer batch failed while the older one ran: start no more
            in_flight.append(asyncio.ensure_future(handle(batch)))
            if len(in_flight) == 2:
                await in_flight.pop(0)
        while in_flight:
            await in_flight.pop(0)
    except asyncio.CancelledError:
        for task in in_flight:
            task.cancel()
        raise
    finally:
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
