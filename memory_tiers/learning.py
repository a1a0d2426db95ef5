"""Learning from a turn: run the extractors on its new messages and store what they found.

Inline (the default), facts are stored before the save node returns. Deferred, the thread is
registered inline (so ownership is still checked on the turn) and extraction runs after the
turn, debounced per thread like LangMem's ReflectionExecutor: a newer turn of the same thread
cancels a pending run and takes its messages along, and `DeferredLearning.flush` runs pending
work at once; the manager flushes on close so nothing submitted is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.messages import AnyMessage
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from memory_tiers.config import ExtractionConfig
from memory_tiers.context import TurnIds
from memory_tiers.errors import BackendError
from memory_tiers.extractors.base import ExtractionContext, FactCandidate, FactExtractor, run_extractor
from memory_tiers.long_term.consolidate import Provenance
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.observability import Metrics, get_logger

logger = get_logger(__name__)

DEFERRED_SAVE_ATTEMPTS = 4

Problem = dict[str, str]


@dataclass(frozen=True)
class Turn:
    """What a save hands to learning: who, where, and the messages new since the last save."""

    ids: TurnIds
    provenance: Provenance
    messages: Sequence[AnyMessage]
    known_facts: Sequence[Mapping[str, Any]] = ()

    def merged_into(self, newer: Turn) -> Turn:
        """This pending turn folded into a newer one of the same thread."""
        seen = {m.id for m in newer.messages}
        return replace(newer, messages=[m for m in self.messages if m.id not in seen] + list(newer.messages))


def extractor_name(extractor: FactExtractor) -> str:
    """How errors name an extractor."""
    return type(extractor).__name__


class Learner:
    """Runs the configured extractors and stores their facts, inline or deferred.

    Args:
        extractors: the extractors, run in order on every turn (the list is shared, not copied).
        config: ``long_term.extraction``.
        store: returns the open long-term store (the manager's property).
        metrics: where retries are counted (the manager's counters); not counted when None.
    """

    def __init__(
        self,
        extractors: list[FactExtractor],
        config: ExtractionConfig,
        store: Callable[[], LongTermStore],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.extractors = extractors
        self.config = config
        self._store = store
        self._metrics = metrics
        self.deferred = DeferredLearning(config.debounce.total_seconds(), self._learn_later)

    async def extract(self, turn: Turn) -> tuple[list[FactCandidate], list[Problem]]:
        """Every extractor's facts; a failing extractor is reported (or raised, if configured)."""
        context = ExtractionContext(
            turn.ids.user_id, turn.ids.thread_id, turn.ids.session_id, turn.known_facts
        )
        candidates: list[FactCandidate] = []
        errors: list[Problem] = []
        for extractor in self.extractors:
            try:
                candidates += await run_extractor(extractor, turn.messages, context)
            except Exception as exc:
                if self.config.on_error == "raise":
                    raise
                # One broken extractor must not cost the user their turn.
                logger.exception("extractor %s failed; its facts are skipped", extractor_name(extractor))
                errors.append(
                    {
                        "source": f"extractor:{extractor_name(extractor)}",
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
        return candidates, errors

    async def learn(self, turn: Turn) -> list[Problem]:
        """Register the thread and learn from the turn; returns the problems to report."""
        store = self._store()
        if self.config.mode == "deferred":
            await store.save_turn(turn.ids.user_id, turn.provenance, [], session_id=turn.ids.session_id)
            if turn.messages:
                self.deferred.submit(turn.ids.thread_id or turn.ids.user_id, turn)
            return []
        candidates, errors = await self.extract(turn) if turn.messages else ([], [])
        outcome = await store.save_turn(
            turn.ids.user_id, turn.provenance, candidates, session_id=turn.ids.session_id
        )
        errors += [
            {"source": "guard", "error": f"instruction-shaped {c.subject}.{c.attribute} was not stored"}
            for c in outcome.rejected
        ]
        return errors

    async def _learn_later(self, turn: Turn) -> None:
        candidates, errors = await self.extract(turn)
        for error in errors:
            logger.warning("deferred learning for thread %s: %s", turn.ids.thread_id, error)
        # Nobody waits on this save to retry it: retry transient backend errors here. The save is
        # idempotent (observations are keyed by turn), so a retry after a lost commit is safe.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(BackendError),
            stop=stop_after_attempt(DEFERRED_SAVE_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=5),
            before_sleep=self._count_retry,
            reraise=True,
        ):
            with attempt:
                await self._store().save_turn(turn.ids.user_id, turn.provenance, candidates)

    def _count_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "deferred learning's save failed (attempt %d): %s; retrying", state.attempt_number, error
        )
        if self._metrics is not None:
            self._metrics.add("retries")


@dataclass
class _Pending:
    turn: Turn
    task: asyncio.Task[None] | None = None
    now: asyncio.Event = field(default_factory=asyncio.Event)
    started: bool = False
    # The run of the same key this one must wait for: one thread's turns are learned in order.
    previous: asyncio.Task[None] | None = None


class DeferredLearning:
    """Debounced background runs, one pending per key.

    Args:
        debounce: seconds a run waits for a newer turn of the same key.
        run: the coroutine function doing the work.
    """

    def __init__(self, debounce: float, run: Callable[[Turn], Any]) -> None:
        self.debounce = debounce
        self._run = run
        self._pending: dict[str, _Pending] = {}  # per key: the run still waiting, if any
        self._latest: dict[str, asyncio.Task[None]] = {}  # per key: the last run submitted
        self._runs: dict[asyncio.Task[None], _Pending] = {}  # every run not finished yet

    def submit(self, key: str, turn: Turn) -> None:
        """Schedule ``turn``; a run of ``key`` still waiting is cancelled and its turn merged.
        Runs of one key never overlap: each waits for the one submitted before it."""
        previous = self._pending.pop(key, None)
        if previous is not None and not previous.started:
            assert previous.task is not None
            previous.task.cancel()
            turn = previous.turn.merged_into(turn)
            after = previous.previous
        else:
            after = self._latest.get(key)
        pending = _Pending(turn, previous=after)
        task = asyncio.get_running_loop().create_task(self._later(key, pending))
        pending.task = task
        self._pending[key] = pending
        self._latest[key] = task
        self._runs[task] = pending
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._runs.pop(task, None)
        if self._latest.get(key) is task:
            del self._latest[key]

    @property
    def pending(self) -> int:
        """Runs submitted and not finished yet."""
        return len(self._runs)

    async def _later(self, key: str, pending: _Pending) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pending.now.wait(), self.debounce)
        pending.started = True
        if self._pending.get(key) is pending:
            del self._pending[key]
        if pending.previous is not None:
            # An older turn of this thread is still being learned: its facts go first.
            await asyncio.gather(pending.previous, return_exceptions=True)
        try:
            await self._run(pending.turn)
        except Exception:
            logger.exception("deferred learning for %s failed; its facts are lost", key)

    async def flush(self) -> None:
        """Run every waiting job now and wait until all submitted work is done."""
        for pending in list(self._pending.values()):
            pending.now.set()
        while self._runs:
            await asyncio.gather(*list(self._runs), return_exceptions=True)

    async def cancel_user(self, user_id: str) -> int:
        """Drop the user's waiting runs and wait for their runs already under way, so that once
        this returns no submitted turn of the user can still write (forgetting a user needs
        that). Returns how many waiting runs were dropped."""
        dropped = 0
        for key, pending in list(self._pending.items()):
            if pending.turn.ids.user_id == user_id:
                assert pending.task is not None and not pending.started
                del self._pending[key]
                pending.task.cancel()
                dropped += 1
        runs = [task for task, pending in self._runs.items() if pending.turn.ids.user_id == user_id]
        await asyncio.gather(*runs, return_exceptions=True)
        return dropped
