"""A session read and a session write as one Lua script each, for a standalone Redis.

The scripts run the same plain commands as `SessionStore`'s pipelines (GETEX, SET ... EX, EXPIRE,
ZADD, ZREMRANGEBYSCORE), so they behave the same on any Redis 6.2+ or Valkey; what they save is
the client's work: one command to encode and one reply to parse instead of six to eight. A
write also checks the session id's owner before it writes anything, where the pipeline writes
and then undoes. Scripts name every key they touch in ``KEYS``; the claim and the expiry index
are in slots of their own, so a Cluster keeps the pipelines (`SessionStore` decides).

redis-py's `Script` sends EVALSHA and loads the script on a NOSCRIPT reply (a restarted or
flushed server), so no SCRIPT LOAD is needed at startup.
"""

from __future__ import annotations

from typing import NamedTuple

import redis.asyncio as aioredis

from memory_tiers.session.keys import SessionKeys

# Both scripts take the same KEYS: session, claim, user index, shadow, expiry index.

# ARGV: ttl, sliding (1/0), archiving (1/0), shadow ttl, expires at, session id, expiry member.
_READ = """
local ttl, sliding, archiving = ARGV[1], ARGV[2] == '1', ARGV[3] == '1'
local raw, owner
if sliding then
  raw = redis.call('GETEX', KEYS[1], 'EX', ttl)
  owner = redis.call('GETEX', KEYS[2], 'EX', ttl)
else
  raw = redis.call('GET', KEYS[1])
  owner = redis.call('GET', KEYS[2])
end
local shadowed = 0
if archiving then
  if sliding then
    shadowed = redis.call('EXPIRE', KEYS[4], ARGV[4])
    redis.call('ZADD', KEYS[5], 'XX', ARGV[5], ARGV[7])
  else
    shadowed = redis.call('EXISTS', KEYS[4])
  end
end
if sliding then
  if raw then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[5], ARGV[6])
  else
    -- Expired: its entry leaves the user's index (a script is atomic, no save can interleave).
    redis.call('ZREM', KEYS[3], ARGV[6])
  end
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {raw, owner, shadowed}
"""

# ARGV: user id, ttl, document, expires at, now, session id, archiving (1/0), shadow ttl,
# expiry member. Returns the session id's owner: the write happened iff it is the user.
_WRITE = """
local user, ttl = ARGV[1], ARGV[2]
local owner = redis.call('GET', KEYS[2])
if not owner then
  redis.call('SET', KEYS[2], user, 'EX', ttl)
  owner = user
elseif owner == user then
  redis.call('EXPIRE', KEYS[2], ttl)
else
  return owner
end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ttl)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
redis.call('EXPIRE', KEYS[3], ttl)
if ARGV[7] == '1' then
  redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[9])
end
return owner
"""


class SessionRead(NamedTuple):
    """What a session read found, however it was sent."""

    raw: str | None  # the session document
    owner: str | None  # the user holding the session id's claim
    shadowed: bool  # a shadow copy exists (always False without archiving)
    stale_entry: bool  # the user index still lists the session, which is gone (left to the caller)


class SessionScripts:
    """The read and write scripts, registered on ``client`` (a standalone ``redis.asyncio.Redis``
    created with ``decode_responses=True``), for a store's keys and settings.

    Args:
        client: the Redis client.
        keys: the store's key names.
        ttl_seconds: the session TTL.
        sliding: whether reads push the expiry forward.
        shadow_ttl_seconds: the shadow copy's TTL when archiving is on, else None.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: SessionKeys,
        *,
        ttl_seconds: int,
        sliding: bool,
        shadow_ttl_seconds: int | None,
    ) -> None:
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.sliding = sliding
        self.shadow_ttl_seconds = shadow_ttl_seconds
        self._read = client.register_script(_READ)
        self._write = client.register_script(_WRITE)

    def _keys(self, user_id: str, session_id: str) -> list[str]:
        keys = self.keys
        return [
            keys.session(user_id, session_id),
            keys.claim(session_id),
            keys.index(user_id),
            keys.shadow(user_id, session_id),
            keys.expiry_index(),
        ]

    @property
    def _archiving(self) -> tuple[int, int]:
        return (0, 0) if self.shadow_ttl_seconds is None else (1, self.shadow_ttl_seconds)

    async def read(self, user_id: str, session_id: str, expires_at: float) -> SessionRead:
        """Read a session and its claim; if sliding, push their expiry (and the user index's,
        and the shadow's when archiving) to ``expires_at``, or take an expired session out of
        the user index. Run again (a retry), it finds and does the same."""
        archiving, shadow_ttl = self._archiving
        raw, owner, shadowed = await self._read(
            keys=self._keys(user_id, session_id),
            args=[
                self.ttl_seconds,
                int(self.sliding),
                archiving,
                shadow_ttl,
                expires_at,
                session_id,
                self.keys.expiry_member(user_id, session_id),
            ],
        )
        return SessionRead(raw, owner, bool(shadowed), stale_entry=False)

    async def write(self, user_id: str, session_id: str, document: str, now: float) -> str:
        """Claim the session id for ``user_id`` (or keep its claim alive) and, only if the user
        holds it, write the document (and its shadow when archiving) and index it. Returns the
        claim's owner."""
        archiving, shadow_ttl = self._archiving
        owner: str = await self._write(
            keys=self._keys(user_id, session_id),
            args=[
                user_id,
                self.ttl_seconds,
                document,
                now + self.ttl_seconds,
                now,
                session_id,
                archiving,
                shadow_ttl,
                self.keys.expiry_member(user_id, session_id),
            ],
        )
        return owner
