"""Archiving sessions before Redis drops them: shadow copies, the expiry index and the sweeper.

Redis TTL expiry has no hook, so every save also writes a *shadow* copy of the session document
that lives ``expiry_grace`` longer than the session, and scores the session in one expiry index
by when it expires. Sliding reads push both forward in the read's own pipeline. The sweeper takes
the index entries that are due; for each whose session key is gone it archives the shadow, then
deletes it under WATCH, so a save that rewrote the shadow meanwhile is never lost, and archive
ids derived from the document make a retried archive land on the same row.

Keys of one user share a hash tag; the index is one key in its own slot. Only single-slot work
runs in a MULTI (the shadow's delete); the index entry is removed afterwards and put back if a
racing save wrote the session again (see ``docs/sessions.md#expiry``).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from memory_tiers.errors import OwnershipError
from memory_tiers.observability import get_logger
from memory_tiers.session.keys import SessionKeys
from memory_tiers.session.records import SessionRecord, decode
from memory_tiers.translate import translate_errors

logger = get_logger(__name__)

TIER = "session"
_PAGE = 100  # index entries fetched per ZRANGEBYSCORE


class ArchiveSession(Protocol):
    """Where expired sessions go: long-term memory, in the manager."""

    async def archive(self, record: SessionRecord) -> object:
        """Store the context of an expired session durably, idempotently: the same record lands
        on the same row (`memory_tiers.session.records.archive_id` gives a stable id)."""

    async def discard(self, record: SessionRecord) -> None:
        """Remove what `archive` stored for ``record`` (its user was forgotten meanwhile)."""


class _Outcome(enum.Enum):
    ARCHIVED = "archived"
    LIVE = "live"
    MISSING = "missing"
    UNREADABLE = "unreadable"


@dataclass
class SweepReport:
    """What one sweep did with the due entries of the expiry index.

    Attributes:
        examined: due entries looked at.
        archived: expired sessions whose context was archived (or had already been, by a run
            that stopped before cleaning up).
        live: sessions that turned out to be still alive (read or written since they were
            scored); their entry was moved to their real expiry.
        missing: entries whose shadow was already gone (archived by someone else, or expired
            past the grace while no sweeper ran); their entry was dropped.
        lost: of the missing, those due longer ago than the grace: their shadow expired before
            any sweep, so their context was never archived.
        unreadable: shadows that could not be decoded; left to expire with their grace.
    """

    examined: int = 0
    archived: int = 0
    live: int = 0
    missing: int = 0
    lost: int = 0
    unreadable: int = 0

    def _count(self, outcome: _Outcome) -> None:
        self.examined += 1
        name = outcome.value
        setattr(self, name, getattr(self, name) + 1)


class SessionExpiry:
    """The shadow copies and expiry index of one `SessionStore`.

    Args:
        client: the store's Redis client (``decode_responses=True``).
        keys: the store's key builder.
        ttl_seconds: the session TTL.
        grace: how much longer a shadow lives than its session.
        archive: called with each expired session's record before its shadow is deleted.
        masked_url: the URL shown in error messages.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: SessionKeys,
        *,
        ttl_seconds: int,
        grace: timedelta,
        archive: ArchiveSession,
        masked_url: str,
    ) -> None:
        self.client = client
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.grace_seconds = max(1, int(grace.total_seconds()))
        self.shadow_ttl_seconds = ttl_seconds + self.grace_seconds
        self.archive = archive
        self.masked_url = masked_url

    # -- commands added to the store's own pipelines ----------------------------------------

    def on_save(self, pipe: Pipeline, user_id: str, session_id: str, payload: str, expires_at: float) -> None:
        """Queue the shadow write and the index entry. The shadow is queued first: the sweeper
        relies on a save's shadow being visible no later than its index entry."""
        pipe.set(self.keys.shadow(user_id, session_id), payload, ex=self.shadow_ttl_seconds)
        pipe.zadd(self.keys.expiry_index(), {self.keys.expiry_member(user_id, session_id): expires_at})

    def on_read(
        self, pipe: Pipeline, user_id: str, session_id: str, *, sliding: bool, expires_at: float
    ) -> None:
        """Queue what a read does; the first queued command's result is truthy iff a shadow
        exists. A sliding read pushes the shadow's TTL and the index score; EXPIRE and ZADD XX
        create nothing for a session that never had a shadow."""
        shadow = self.keys.shadow(user_id, session_id)
        if not sliding:
            pipe.exists(shadow)
            return
        pipe.expire(shadow, self.shadow_ttl_seconds)
        member = self.keys.expiry_member(user_id, session_id)
        pipe.zadd(self.keys.expiry_index(), {member: expires_at}, xx=True)

    # -- archiving ------------------------------------------------------------------------

    async def archive_expired(self, user_id: str, session_id: str) -> bool:
        """Archive the session's shadow if the session itself is gone (a load found it expired
        before the sweeper did). Returns whether a context was archived."""
        return await self._settle(user_id, session_id) is _Outcome.ARCHIVED

    async def sweep(self, *, now: float | None = None, limit: int = 1000) -> SweepReport:
        """Archive the sessions whose expiry index entry is due at ``now``.

        Args:
            now: the time (epoch seconds) entries are due at; defaults to the present. A later
                time makes live sessions due too: they are found alive and rescheduled.
            limit: at most this many entries are examined.

        Raises:
            BackendError: Redis or the archive failed; what was archived stays archived and
                the rest is retried by the next sweep.
        """
        due_at = time.time() if now is None else now
        report = SweepReport()
        # Entries examined but possibly still in the due range (alive under a simulated `now`,
        # unreadable, or re-added after a racing save): skipped, so every pass terminates.
        seen: set[str] = set()
        while report.examined < limit:
            with translate_errors(TIER, self.masked_url):
                fetched = await self.client.zrangebyscore(
                    self.keys.expiry_index(), "-inf", due_at, start=0, num=_PAGE + len(seen), withscores=True
                )
            fresh = [(m, score) for m, score in fetched if m not in seen][: limit - report.examined]
            if not fresh:
                break
            for member, score in fresh:
                user_id, session_id = self.keys.parse_expiry_member(member)
                outcome = await self._settle(user_id, session_id)
                report._count(outcome)
                if outcome is _Outcome.MISSING and score + self.grace_seconds < due_at:
                    report.lost += 1
                seen.add(member)
        if report.lost:
            logger.warning(
                "%d expired sessions were dropped by Redis before any sweep archived them "
                "(no sweeper ran within session.expiry_grace)",
                report.lost,
            )
        logger.debug("session sweep: %s", report)
        return report

    async def run(self, interval: timedelta) -> None:
        """Sweep every ``interval`` until cancelled; a failed sweep is logged and retried at the
        next interval. The first sweep waits one interval (the application has the servers to
        itself while it starts; nothing is lost meanwhile, shadows outlive their sessions)."""
        while True:
            await asyncio.sleep(interval.total_seconds())
            try:
                await self.sweep()
            except Exception:
                logger.warning("session expiry sweep failed; retrying in %s", interval, exc_info=True)

    async def _settle(self, user_id: str, session_id: str) -> _Outcome:
        """Archive one session if it expired, and clean up its shadow and index entry."""
        key, shadow = self.keys.session(user_id, session_id), self.keys.shadow(user_id, session_id)
        with translate_errors(TIER, self.masked_url):
            async with self.client.pipeline(transaction=True) as pipe:
                # WATCH first: if a save rewrites the shadow while we archive, the delete fails.
                await pipe.watch(shadow)
                raw = await pipe.get(shadow)
                remaining_ms = await pipe.pttl(key)
                if remaining_ms == -2 and raw is not None:
                    try:
                        record = decode(user_id, session_id, raw, expired=True)
                    except (ValueError, OwnershipError):
                        logger.error("session shadow %r is unreadable; it expires with its grace", shadow)
                        return _Outcome.UNREADABLE
                    await self.archive.archive(record)
                    pipe.multi()
                    pipe.delete(shadow)
                    try:
                        await pipe.execute()
                    except WatchError:
                        return await self._after_lost_watch(record)
            if remaining_ms != -2:  # the session is alive: its entry was scored too early
                await self._reschedule(user_id, session_id, remaining_ms)
                return _Outcome.LIVE
            await self._drop_entry(user_id, session_id)
        return _Outcome.MISSING if raw is None else _Outcome.ARCHIVED

    async def _after_lost_watch(self, record: SessionRecord) -> _Outcome:
        """The shadow changed while its context was being archived: a save took the session
        over (it wrote its own index entry: keep both), or the user was forgotten. Forgetting
        writes its tombstone before it deletes the user's long-term rows, so a tombstone not
        there yet means those deletes are still to come and take this archive with them."""
        if await self.client.exists(self.keys.forgotten(record.user_id)):
            await self.archive.discard(record)
            return _Outcome.MISSING
        return _Outcome.ARCHIVED

    async def _reschedule(self, user_id: str, session_id: str, remaining_ms: int) -> None:
        remaining = remaining_ms / 1000 if remaining_ms >= 0 else self.ttl_seconds
        member = self.keys.expiry_member(user_id, session_id)
        await self.client.zadd(self.keys.expiry_index(), {member: time.time() + remaining})

    async def _drop_entry(self, user_id: str, session_id: str) -> None:
        """Remove the session's index entry, and put it back if a save raced the removal.

        The index is in another slot, so this cannot join the shadow's MULTI. A save writes its
        shadow before its entry; so if the ZREM removed a racing save's entry, that save's keys
        are visible to the check that follows it.
        """
        member = self.keys.expiry_member(user_id, session_id)
        await self.client.zrem(self.keys.expiry_index(), member)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.pttl(self.keys.session(user_id, session_id))
            pipe.exists(self.keys.shadow(user_id, session_id))
            remaining_ms, shadow_exists = await pipe.execute()
        if remaining_ms != -2:
            await self._reschedule(user_id, session_id, remaining_ms)
        elif shadow_exists:
            await self.client.zadd(self.keys.expiry_index(), {member: time.time()})
