"""`manager.users`: export everything held about a user, or forget the user in every tier.

Forgetting runs in an order that an interrupted call can always finish by being called again:
first the user's deferred learning is stopped (so no pending turn writes facts back), then the
checkpoints of every thread in the registry (all of them at once where the saver allows: one
statement on PostgreSQL), then the sessions, and last the long-term rows in one transaction,
with the registry rows that lead to the threads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from memory_tiers.ids import validate_id
from memory_tiers.jsonable import to_json
from memory_tiers.long_term.schema import threads
from memory_tiers.long_term.user_data import delete_user_rows, export_rows, user_rows
from memory_tiers.observability import instrumented, manager_telemetry
from memory_tiers.working.thread_data import delete_threads, export_checkpoints

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

EXPORT_FORMAT = "memory_tiers.user_export/1"


@dataclass(frozen=True)
class ForgetReport:
    """What `UsersAPI.forget` deleted, per tier.

    Attributes:
        user_id: the user forgotten.
        deferred_turns: turns waiting for deferred learning that were dropped unlearned.
        threads: registered threads whose checkpoints were deleted (working tier).
        sessions: what the session store reported deleting for the user.
        long_term: rows deleted per long-term table (the thread registry is ``mt_threads``).
    """

    user_id: str
    deferred_turns: int = 0
    threads: int = 0
    sessions: int = 0
    long_term: dict[str, int] = field(default_factory=dict)

    @property
    def found_anything(self) -> bool:
        """Whether anything was deleted (False when the user was already forgotten)."""
        return bool(self.deferred_turns or self.threads or self.sessions or any(self.long_term.values()))


@instrumented("users", telemetry=manager_telemetry, bind=True)
class UsersAPI:
    """Data-rights requests for one manager: export a user's data, or delete all of it."""

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager

    async def export(self, user_id: str) -> dict[str, Any]:
        """Everything the three tiers hold about the user, as JSON-serializable data.

        Each tier is read in turn, not as one snapshot: run it while the user is not active for
        an export that is consistent across tiers.

        Returns:
            ``format`` (`EXPORT_FORMAT`), ``exported_at`` (ISO 8601, UTC), ``user_id``, and per
            tier: ``long_term`` (``profile``, ``facts`` with their history and ``observations``,
            ``threads`` (the registry), ``archives``, ``store_items``), ``session``
            (``sessions``: the user's session records), ``working`` (``threads``: per registered
            thread, every checkpoint's ids, ``ts``, metadata, channel values and pending writes).
            Messages appear as ``message_to_dict`` dicts.

        Raises:
            InvalidIdentifierError: ``user_id`` is malformed.
        """
        user_id = validate_id("user_id", user_id)
        manager = self._manager
        saver = manager.checkpointer.inner
        long_term = await export_rows(manager.long_term, user_id)
        sessions = await manager.session_store.export_user(user_id)
        working = [
            {"thread_id": row["thread_id"], "checkpoints": await export_checkpoints(saver, row["thread_id"])}
            for row in long_term["threads"]
        ]
        return {
            "format": EXPORT_FORMAT,
            "exported_at": datetime.now(UTC).isoformat(),
            "user_id": user_id,
            "long_term": to_json(long_term),
            "session": {"sessions": [to_json(dataclasses.asdict(record)) for record in sessions]},
            "working": {"threads": working},
        }

    async def forget(self, user_id: str) -> ForgetReport:
        """Delete everything the three tiers hold about the user; other users are untouched.

        In order: the user's turns waiting for deferred learning are dropped (runs already under
        way are waited for); every checkpoint, blob and write of every thread registered to the
        user (in batches of threads: one statement each on PostgreSQL, one transaction on SQLite),
        and the checkpointer's cached owners and fencing heads of those threads; the user's
        sessions and session id claims; then, in one transaction, the profile, facts with their
        history and observations, archives, store items and the thread registry rows. The
        registry goes last because it is how the threads are found, so a forget that fails part
        way is completed by calling it again. Calling it for a user already forgotten finds
        nothing and succeeds.

        Stop the user's traffic first: a turn that runs during the call can write new data.

        Raises:
            InvalidIdentifierError: ``user_id`` is malformed.
        """
        user_id = validate_id("user_id", user_id)
        manager = self._manager
        checkpointer, sessions, long_term = manager.checkpointer, manager.session_store, manager.long_term
        deferred_turns = await manager.learner.deferred.cancel_user(user_id)
        thread_ids = [row["thread_id"] async for row in user_rows(long_term, threads, user_id)]
        await delete_threads(checkpointer, thread_ids)
        session_count = await sessions.forget_user(user_id)
        rows = await delete_user_rows(long_term, user_id)
        return ForgetReport(user_id, deferred_turns, len(thread_ids), session_count, rows)
