"""`manager.sessions`: start, get, update, list and end sessions, ids validated at the edge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory_tiers.errors import UsageError
from memory_tiers.ids import validate_id
from memory_tiers.observability import instrumented, manager_telemetry
from memory_tiers.session.records import SessionRecord, archive_id

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager


@instrumented("sessions", telemetry=manager_telemetry, bind=True)
class SessionsAPI:
    """Session lifecycle for one manager; every call is checked against the session's owner."""

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager
        self.archive_target = SessionArchive(manager)

    async def start(self, user_id: str, session_id: str, data: dict[str, Any] | None = None) -> SessionRecord:
        """Create a session (or take over an expired id).

        Raises:
            UsageError: the user already has a live session with this id.
            OwnershipError: another user holds this session id.
        """
        store = self._manager.session_store
        user_id, session_id = validate_id("user_id", user_id), validate_id("session_id", session_id)
        if await store.load(user_id, session_id) is not None:
            raise UsageError(f"session {session_id!r} is already live for user {user_id!r}")
        await store.save(user_id, session_id, dict(data or {}))
        return await store.get(user_id, session_id)

    async def get(self, user_id: str, session_id: str) -> SessionRecord:
        """A live session (refreshing its sliding TTL); `NotFoundError` if it is gone."""
        store = self._manager.session_store
        return await store.get(validate_id("user_id", user_id), validate_id("session_id", session_id))

    async def update(self, user_id: str, session_id: str, values: dict[str, Any]) -> SessionRecord:
        """Merge ``values`` into a live session's context."""
        store = self._manager.session_store
        return await store.update(
            validate_id("user_id", user_id), validate_id("session_id", session_id), values
        )

    async def list(self, user_id: str) -> list[str]:
        """The ids of the user's live sessions, most recently active first."""
        return await self._manager.session_store.list_sessions(validate_id("user_id", user_id))

    async def end(self, user_id: str, session_id: str) -> str:
        """Archive the session's context to long-term memory, then delete it (with its shadow
        copy, so the sweeper does not archive it again).

        Returns the id of the archive row. The archive is written first, so a crash in
        between leaves the session alive rather than lost; the id is derived from the session's
        document, so ending it again after such a crash writes no second row.
        """
        record = await self.get(user_id, session_id)
        row_id = await self.archive_target.archive(record)
        await self._manager.session_store.delete(record.user_id, record.session_id)
        return row_id

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> int:
        """Archive the sessions that expired since the last sweep (the manager also runs this
        every ``session.sweep_interval``); returns how many were archived.

        Args:
            now: the time (epoch seconds) to sweep as of; defaults to the present.
            limit: at most this many expired entries are examined per call.
        """
        report = await self._manager.session_store.sweep_expired(now=now, limit=limit)
        return report.archived


class SessionArchive:
    """Ended and expired sessions' contexts, kept in long-term memory as ``session`` archives
    (the session store's `ArchiveSession`)."""

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager

    async def archive(self, record: SessionRecord) -> str:
        """Write ``record``'s context as an archive; returns the row's id. Idempotent: the same
        version of a session always gets the same row."""
        row_id = await self._manager.long_term.add_archive(
            record.user_id,
            kind="session",
            summary=str(record.data.get("summary", "")),
            data=record.data,
            session_id=record.session_id,
            archive_id=archive_id(record),
        )
        self._manager.metrics.add("sessions_archived")
        return row_id

    async def discard(self, record: SessionRecord) -> None:
        """Delete the archive `archive` wrote for ``record``."""
        await self._manager.long_term.delete_archive(record.user_id, archive_id(record))
