"""The Redis session store: plain commands only, so any Redis 6.2+/Valkey works without modules.

Every operation is one round trip: on a standalone Redis a Lua script of those commands
(`memory_tiers.session.scripts`), else a non-transactional pipeline, which stays valid on
Cluster because a user's keys share a hash tag. Values and their TTL are written by one ``SET ... EX``;
reads use ``GETEX`` so the sliding expiry moves in the same command. With an archive callback,
sessions are archived before Redis drops them (`memory_tiers.session.expiry`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from memory_tiers.config import SessionConfig
from memory_tiers.config_values import mask_url
from memory_tiers.errors import ConfigError, NotFoundError, OwnershipError
from memory_tiers.observability import Telemetry, instrumented
from memory_tiers.retries import REDIS_RETRY_ERRORS, CountingRetry
from memory_tiers.session import users
from memory_tiers.session.clients import runs_scripts
from memory_tiers.session.expiry import ArchiveSession, SessionExpiry, SweepReport
from memory_tiers.session.keys import SessionKeys
from memory_tiers.session.records import SessionRecord, decode, encode
from memory_tiers.session.scripts import SessionRead, SessionScripts
from memory_tiers.translate import translate_errors

__all__ = ["SessionRecord", "SessionStore"]

TIER = "session"


@instrumented(TIER, skip=("run_sweeper",))
class SessionStore:
    """Session context per (user, session), owner-checked on every access.

    Args:
        client: a ``redis.asyncio.Redis`` (or fakeredis) client created with
            ``decode_responses=True``.
        ttl: how long a session lives after its last write (or read, if ``sliding``).
        sliding: whether reads push the expiry forward.
        key_prefix: the prefix of every key this store writes.
        url: the URL shown (password masked) in error messages.
        archive: called with an expired session's record to archive its context; when given,
            every save keeps a shadow copy for it (see ``docs/sessions.md#expiry``).
        expiry_grace: how much longer the shadow copy lives than the session.
        telemetry: where its spans and counters go (a manager passes its own; the global
            OpenTelemetry providers and counts of its own when None).
        scripts: send each read and write as one Lua script (`memory_tiers.session.scripts`;
            a standalone Redis only) instead of a pipeline.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl: timedelta,
        sliding: bool = True,
        key_prefix: str = "memory_tiers",
        url: str = "redis",
        archive: ArchiveSession | None = None,
        expiry_grace: timedelta = timedelta(days=1),
        telemetry: Telemetry | None = None,
        scripts: bool = False,
    ) -> None:
        self.client = client
        self.telemetry = telemetry or Telemetry()
        self.keys = SessionKeys(key_prefix)
        self.ttl_seconds = max(1, int(ttl.total_seconds()))
        self.sliding = sliding
        self.masked_url = mask_url(url)
        self.expiry: SessionExpiry | None = None
        if archive is not None:
            self.expiry = SessionExpiry(
                client,
                self.keys,
                ttl_seconds=self.ttl_seconds,
                grace=expiry_grace,
                archive=archive,
                masked_url=self.masked_url,
            )
        self.scripts: SessionScripts | None = None
        if scripts:
            self.scripts = SessionScripts(
                client,
                self.keys,
                ttl_seconds=self.ttl_seconds,
                sliding=sliding,
                shadow_ttl_seconds=None if self.expiry is None else self.expiry.shadow_ttl_seconds,
            )

    @classmethod
    def from_config(
        cls,
        client: aioredis.Redis,
        config: SessionConfig,
        *,
        archive: ArchiveSession | None = None,
        url: str = "redis",
        telemetry: Telemetry | None = None,
    ) -> SessionStore:
        """A store on ``client`` with the settings of ``config``; ``archive`` is used only when
        ``config.archive_on_expiry`` is on, the scripts only when ``config.scripts`` is on and
        ``client`` is a standalone Redis (`memory_tiers.session.clients.runs_scripts`)."""
        return cls(
            client,
            ttl=config.ttl,
            sliding=config.sliding,
            key_prefix=config.key_prefix,
            url=url,
            archive=archive if config.archive_on_expiry else None,
            expiry_grace=config.expiry_grace,
            telemetry=telemetry,
            scripts=config.scripts and runs_scripts(client),
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: SessionConfig,
        *,
        archive: ArchiveSession | None = None,
        telemetry: Telemetry | None = None,
    ) -> AsyncIterator[SessionStore]:
        """Connect to ``config.url`` (``memory://`` is an in-process fakeredis) and check it."""
        url = config.url.get_secret_value()
        telemetry = telemetry or Telemetry()
        client: aioredis.Redis
        if url.startswith("memory://"):
            if config.cluster:
                raise ConfigError("session.cluster needs a redis:// or rediss:// URL, not memory://")
            import fakeredis

            client = fakeredis.FakeAsyncRedis(decode_responses=True)
        elif config.cluster:
            from redis.asyncio.cluster import RedisCluster

            # Same command API; every pipeline here is valid on Cluster (see the module doc).
            client = cast(
                aioredis.Redis,
                RedisCluster.from_url(
                    url,
                    decode_responses=True,
                    socket_connect_timeout=config.connect_timeout.total_seconds(),
                    socket_timeout=config.socket_timeout.total_seconds(),
                    health_check_interval=30,
                ),
            )
        else:
            # Every command of this store is idempotent (whole-document SETs, GETEX, EXPIRE,
            # ZADD), so redis-py may resend a command or pipeline on a fresh connection.
            retry = CountingRetry(
                config.retries,
                lambda: telemetry.metrics.add("retries", attributes={"memory_tiers.tier": TIER}),
            )
            client = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=config.connect_timeout.total_seconds(),
                socket_timeout=config.socket_timeout.total_seconds(),
                health_check_interval=30,
                retry=retry,
                retry_on_error=list(REDIS_RETRY_ERRORS),
            )
        store = cls.from_config(client, config, archive=archive, url=url, telemetry=telemetry)
        try:
            with translate_errors(TIER, store.masked_url):
                await client.ping()
            yield store
        finally:
            await client.aclose()

    def _expires_at(self) -> float:
        return time.time() + self.ttl_seconds

    async def load(self, user_id: str, session_id: str) -> SessionRecord | None:
        """Read a session and, if sliding, refresh its TTL: one round trip.

        Returns None when the session does not exist (never started, or expired). An expired
        session whose context was not archived yet is archived first (extra round trips on
        this path only), so a new session under the same id cannot overwrite it.

        Raises:
            OwnershipError: the session id is held by another user.
        """
        expires_at = self._expires_at()
        with translate_errors(TIER, self.masked_url):
            if self.scripts is not None:
                read = await self.scripts.read(user_id, session_id, expires_at)
            else:
                read = await self._read_pipelined(user_id, session_id, expires_at)
        if read.stale_entry:
            # The user's own index lists this expired id (this read's ZADD XX, or an earlier
            # attempt's, re-scored it): taken out whoever holds the id now, as the script does.
            await self._unlist_expired(user_id, session_id)
        if read.owner is not None and read.owner != user_id:
            raise OwnershipError(f"session {session_id!r} belongs to another user")
        if read.raw is not None:
            if self.sliding:
                self.telemetry.metrics.add("ttl_refreshes")
            return decode(user_id, session_id, read.raw)
        if read.shadowed and self.expiry is not None:  # expired, but its shadow is still there
            await self.expiry.archive_expired(user_id, session_id)
        return None

    async def _read_pipelined(self, user_id: str, session_id: str, expires_at: float) -> SessionRead:
        """`load`'s read as one pipeline of plain commands (Cluster, fakeredis, scripts off)."""
        key, claim, index = (
            self.keys.session(user_id, session_id),
            self.keys.claim(session_id),
            self.keys.index(user_id),
        )
        async with self.client.pipeline(transaction=False) as pipe:
            if self.sliding:
                # GETEX, EXPIRE and ZADD XX touch only what exists: a read creates nothing.
                pipe.getex(key, ex=self.ttl_seconds)
                pipe.getex(claim, ex=self.ttl_seconds)
            else:
                pipe.get(key)
                pipe.get(claim)
            if self.expiry is not None:
                self.expiry.on_read(pipe, user_id, session_id, sliding=self.sliding, expires_at=expires_at)
            if self.sliding:
                pipe.zadd(index, {session_id: expires_at}, xx=True)
                # Whether it is listed, not whether this ZADD changed it: a resent read finds
                # the entry an earlier attempt re-scored.
                pipe.zscore(index, session_id)
                pipe.expire(index, self.ttl_seconds)
            raw, owner, *rest = await pipe.execute()
        shadowed = self.expiry is not None and bool(rest[0])
        listed = self.sliding and rest[-2] is not None
        return SessionRead(raw, owner, shadowed, stale_entry=listed and raw is None)

    async def _unlist_expired(self, user_id: str, session_id: str) -> None:
        """Take an expired session out of the user's index, unless a save wrote it meanwhile
        (WATCH on its key; both keys share the user's slot, so this is valid on Cluster)."""
        key, index = self.keys.session(user_id, session_id), self.keys.index(user_id)
        with translate_errors(TIER, self.masked_url):
            async with self.client.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                # Not EXISTS: on a watched Cluster pipeline, multi-key commands are not run.
                if await pipe.pttl(key) != -2:
                    return
                pipe.multi()
                pipe.zrem(index, session_id)
                with contextlib.suppress(WatchError):  # saved meanwhile: it is live again
                    await pipe.execute()

    async def save(self, user_id: str, session_id: str, data: dict[str, Any]) -> None:
        """Write a session's context with its TTL and claim its id: one round trip.

        The write is blind: an expired session's unarchived context under the same id is
        archived by `load`, which the nodes and `manager.sessions` always call first.

        Raises:
            OwnershipError: the session id is held by another user (nothing is kept).
        """
        payload = encode(user_id, data)
        now = time.time()
        with translate_errors(TIER, self.masked_url):
            if self.scripts is not None:
                owner = await self.scripts.write(user_id, session_id, payload, now)
            else:
                owner = await self._write_pipelined(user_id, session_id, payload, now)
        if owner != user_id:
            raise OwnershipError(f"session {session_id!r} belongs to another user")

    async def _write_pipelined(self, user_id: str, session_id: str, payload: str, now: float) -> str:
        """`save`'s write as one pipeline of plain commands; returns the session id's owner. If
        another user won the id meanwhile, the write (under our own user's keys) is undone."""
        key, claim, index = (
            self.keys.session(user_id, session_id),
            self.keys.claim(session_id),
            self.keys.index(user_id),
        )
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(claim, user_id, nx=True, ex=self.ttl_seconds)
            pipe.getex(claim, ex=self.ttl_seconds)  # the owner, whose claim lives on
            pipe.set(key, payload, ex=self.ttl_seconds)
            pipe.zadd(index, {session_id: now + self.ttl_seconds})
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.expire(index, self.ttl_seconds)
            if self.expiry is not None:
                self.expiry.on_save(pipe, user_id, session_id, payload, now + self.ttl_seconds)
            _, owner, *_ = await pipe.execute()
        if owner != user_id:
            async with self.client.pipeline(transaction=False) as pipe:
                self._drop(pipe, user_id, session_id)
                await pipe.execute()
        return cast(str, owner)

    def _drop(self, pipe: Pipeline, user_id: str, session_id: str) -> None:
        """Queue the removal of a session's document, shadow and index entries (not its claim)."""
        pipe.delete(self.keys.session(user_id, session_id))
        pipe.zrem(self.keys.index(user_id), session_id)
        pipe.delete(self.keys.shadow(user_id, session_id))
        pipe.zrem(self.keys.expiry_index(), self.keys.expiry_member(user_id, session_id))

    async def get(self, user_id: str, session_id: str) -> SessionRecord:
        """Like `load`, but a missing session raises `NotFoundError`."""
        record = await self.load(user_id, session_id)
        if record is None:
            raise NotFoundError(f"session {session_id!r} of user {user_id!r} does not exist")
        return record

    async def update(self, user_id: str, session_id: str, values: dict[str, Any]) -> SessionRecord:
        """Merge ``values`` into an existing session's context and write it back."""
        record = await self.get(user_id, session_id)
        data = {**record.data, **values}
        await self.save(user_id, session_id, data)
        return SessionRecord(user_id, session_id, data, time.time())

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Remove a session (with its shadow copy, so it is not archived again on expiry) and
        release its id. Returns whether it existed."""
        claim = self.keys.claim(session_id)
        with translate_errors(TIER, self.masked_url):
            owner = await self.client.get(claim)
            if owner is not None and owner != user_id:
                raise OwnershipError(f"session {session_id!r} belongs to another user")
            async with self.client.pipeline(transaction=False) as pipe:
                self._drop(pipe, user_id, session_id)
                pipe.delete(claim)
                deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def list_sessions(self, user_id: str) -> list[str]:
        """The ids of a user's live sessions, most recently active first."""
        with translate_errors(TIER, self.masked_url):
            ids = await self.client.zrevrangebyscore(self.keys.index(user_id), "+inf", time.time())
        return list(ids)

    async def ttl(self, user_id: str, session_id: str) -> int | None:
        """Seconds until the session expires, or None if it does not exist."""
        with translate_errors(TIER, self.masked_url):
            remaining = await self.client.ttl(self.keys.session(user_id, session_id))
        return remaining if remaining >= 0 else None

    # -- expiry -------------------------------------------------------------------------

    async def sweep_expired(self, *, now: float | None = None, limit: int = 1000) -> SweepReport:
        """Archive the sessions that expired (by ``now``, default the present) and clean up
        their shadow copies; at most ``limit`` index entries are examined. Safe to run from
        several processes at once. An empty report when archiving is off.

        Raises:
            BackendError: Redis or the archive failed; the next sweep retries what is left.
        """
        if self.expiry is None:
            return SweepReport()
        return await self.expiry.sweep(now=now, limit=limit)

    async def run_sweeper(self, interval: timedelta | None) -> None:
        """Run `sweep_expired` every ``interval`` until cancelled (failures are logged and
        retried); returns at once when ``interval`` is None or archiving is off."""
        if interval is not None and self.expiry is not None:
            await self.expiry.run(interval)

    # -- users --------------------------------------------------------------------------

    async def export_user(self, user_id: str) -> list[SessionRecord]:
        """Every session the tier holds for ``user_id``: the live ones, then the expired ones
        whose context is not archived yet (``expired=True``), each newest first. Refreshes no
        TTL; ``user_id`` must be validated by the caller."""
        with translate_errors(TIER, self.masked_url):
            return await users.export_user(self.client, self.keys, user_id)

    async def forget_user(self, user_id: str) -> int:
        """Delete every session key of ``user_id``, the session-id claims the user still holds
        and the user's expiry index entries, archiving nothing. Returns how many keys and index
        entries were removed; idempotent (a rerun after a failure finishes the job, then
        returns 0). Sessions written while it runs may survive: call it when the user is not
        active. ``user_id`` must be validated by the caller."""
        with translate_errors(TIER, self.masked_url):
            return await users.forget_user(self.client, self.keys, user_id)
