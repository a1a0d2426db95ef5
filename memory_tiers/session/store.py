"""The Redis session store: plain commands only, so any Redis 6.2+/Valkey works without modules.

Every operation is one round trip (a non-transactional pipeline, which stays valid on Cluster
because a user's keys share a hash tag). Values and their TTL are written by one ``SET ... EX``;
reads use ``GETEX`` so the sliding expiry moves in the same command.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from memory_tiers.config import SessionConfig, mask_url
from memory_tiers.errors import NotFoundError, OwnershipError, StateSchemaError
from memory_tiers.session.keys import SessionKeys
from memory_tiers.translate import translate_errors

TIER = "session"


@dataclass(frozen=True)
class SessionRecord:
    """A live session: its owner, the context it holds and when it expires."""

    user_id: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


def _encode(user_id: str, data: dict[str, Any]) -> str:
    try:
        return json.dumps(
            {"owner": user_id, "data": data, "updated_at": time.time()},
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise StateSchemaError(f"session values must be JSON-serializable: {exc}") from None


class SessionStore:
    """Session context per (user, session), owner-checked on every access.

    Args:
        client: a ``redis.asyncio.Redis`` (or fakeredis) client created with
            ``decode_responses=True``.
        ttl: how long a session lives after its last write (or read, if ``sliding``).
        sliding: whether reads push the expiry forward.
        key_prefix: the prefix of every key this store writes.
        url: the URL shown (password masked) in error messages.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl: timedelta,
        sliding: bool = True,
        key_prefix: str = "memory_tiers",
        url: str = "redis",
    ) -> None:
        self.client = client
        self.keys = SessionKeys(key_prefix)
        self.ttl_seconds = max(1, int(ttl.total_seconds()))
        self.sliding = sliding
        self.masked_url = mask_url(url)

    @classmethod
    @asynccontextmanager
    async def open(cls, config: SessionConfig) -> AsyncIterator[SessionStore]:
        """Connect to ``config.url`` (``memory://`` is an in-process fakeredis) and check it."""
        url = config.url.get_secret_value()
        client: aioredis.Redis
        if url.startswith("memory://"):
            import fakeredis

            client = fakeredis.FakeAsyncRedis(decode_responses=True)
        else:
            client = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=config.connect_timeout.total_seconds(),
                socket_timeout=config.socket_timeout.total_seconds(),
                health_check_interval=30,
            )
        store = cls(client, ttl=config.ttl, sliding=config.sliding, key_prefix=config.key_prefix, url=url)
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

        Returns None when the session does not exist (never started, or expired).

        Raises:
            OwnershipError: the session id is held by another user.
        """
        key, claim, index = (
            self.keys.session(user_id, session_id),
            self.keys.claim(session_id),
            self.keys.index(user_id),
        )
        with translate_errors(TIER, self.masked_url):
            async with self.client.pipeline(transaction=False) as pipe:
                if self.sliding:
                    pipe.getex(key, ex=self.ttl_seconds)
                    pipe.get(claim)
                    # Only existing keys and members are touched: EXPIRE and ZADD XX create nothing.
                    pipe.expire(claim, self.ttl_seconds)
                    pipe.zadd(index, {session_id: self._expires_at()}, xx=True)
                    pipe.expire(index, self.ttl_seconds)
                else:
                    pipe.get(key)
                    pipe.get(claim)
                raw, owner, *_ = await pipe.execute()
        return self._decode(user_id, session_id, raw, owner)

    def _decode(
        self, user_id: str, session_id: str, raw: str | None, owner: str | None
    ) -> SessionRecord | None:
        if owner is not None and owner != user_id:
            raise OwnershipError(f"session {session_id!r} belongs to another user")
        if raw is None:
            return None
        doc = json.loads(raw)
        if doc.get("owner") != user_id:
            raise OwnershipError(f"session {session_id!r} belongs to another user")
        return SessionRecord(user_id, session_id, doc.get("data") or {}, doc.get("updated_at", 0))

    async def save(self, user_id: str, session_id: str, data: dict[str, Any]) -> None:
        """Write a session's context with its TTL and claim its id: one round trip.

        Raises:
            OwnershipError: the session id is held by another user (nothing is kept).
        """
        payload = _encode(user_id, data)
        key, claim, index = (
            self.keys.session(user_id, session_id),
            self.keys.claim(session_id),
            self.keys.index(user_id),
        )
        now = time.time()
        with translate_errors(TIER, self.masked_url):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(claim, user_id, nx=True, ex=self.ttl_seconds)
                pipe.get(claim)
                pipe.expire(claim, self.ttl_seconds)
                pipe.set(key, payload, ex=self.ttl_seconds)
                pipe.zadd(index, {session_id: now + self.ttl_seconds})
                pipe.zremrangebyscore(index, "-inf", now)
                pipe.expire(index, self.ttl_seconds)
                _, owner, *_ = await pipe.execute()
            if owner != user_id:
                # Lost a race for a fresh id: undo the write, which lives under our own user.
                await self.client.delete(key)
                await self.client.zrem(index, session_id)
                raise OwnershipError(f"session {session_id!r} belongs to another user")

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
        """Remove a session and release its id. Returns whether it existed."""
        key, claim, index = (
            self.keys.session(user_id, session_id),
            self.keys.claim(session_id),
            self.keys.index(user_id),
        )
        with translate_errors(TIER, self.masked_url):
            owner = await self.client.get(claim)
            if owner is not None and owner != user_id:
                raise OwnershipError(f"session {session_id!r} belongs to another user")
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.zrem(index, session_id)
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
