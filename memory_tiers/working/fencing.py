"""Keeping two runs of one thread apart: fenced checkpoint writes.

**Fencing.** Every checkpoint write of a graph run names its parent, the checkpoint the run
stands on. The thread's *head* (its latest checkpoint, per checkpoint namespace) is kept
beside the checkpoints, and each write first compare-and-sets it from the parent to the new
checkpoint, atomically. A run that another run of the same thread overtook (both loaded C0,
the other wrote C1) finds the head at C1, not C0: its write raises `ThreadConflictError` and
nothing is written, instead of silently forking the history. One run's writes are chained by
LangGraph (each waits for the one before), so a run never trips over itself.

Heads live in the session tier's Redis: one hash per thread, ``<prefix>:heads:{<thread>}``
(field: the namespace, value: ``"<checkpoint id> <ms>"``), changed by one Lua script in one
round trip, with a sliding TTL. A missing head accepts any parent (a thread older than the
fencing, one idle past the TTL, a fork's new thread); the first write sets it. With the
embedded fakeredis the heads are a dictionary in the process: fencing then covers the runs
of one process only.

Branching on purpose is not a conflict. A run asked to start from a given checkpoint (time
travel, ``update_state`` at an older checkpoint, a subgraph replaying with its parent) loads
it by id; the guard marks the loaded tuple's config with `BRANCH_KEY`, LangGraph carries that
config into the run's writes, and a write whose parent is the marked checkpoint moves the head
unconditionally.

Repair. A head that disagrees with the write is not trusted blindly: if the saver's latest
checkpoint *is* the write's parent, the head is behind the saver (a write that committed but
reported an error, writes made while Redis was unreachable, a worker that crashed between
the compare-and-set and its write). Such a head is replaced when the checkpoint it names
exists, or when it is older than `CRASH_GRACE` (a claim still in flight is younger).

Serializing whole runs instead (``manager.threads.lock``) is working/run_lock.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from cachetools import TTLCache
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointTuple

from memory_tiers.errors import (
    BackendUnavailableError,
    ThreadConflictError,
)
from memory_tiers.observability import get_logger
from memory_tiers.session.clients import in_process
from memory_tiers.session.keys import SessionKeys
from memory_tiers.translate import translate_errors
from memory_tiers.working.chain import ROOT_NS, thread_config

logger = get_logger(__name__)

BRANCH_KEY = "__memory_tiers_branch_from"
"""Configurable key on a checkpoint tuple loaded by id: writes on top of it may branch. Keys
starting with ``__`` are never copied into checkpoint metadata by LangGraph."""

HEAD_TTL_MS = 24 * 3600 * 1000
"""A thread's heads expire a day after its last write: an idle thread's next write finds no
head and sets one, so expiry costs no correctness, only the key's memory."""

CRASH_GRACE_MS = 30_000
"""A head naming a checkpoint that does not exist is a claim whose write is still in flight,
or one a crash abandoned. One checkpoint write takes milliseconds (bounded by the saver's
connection and statement timeouts), so a claim older than this is taken as abandoned."""

DEGRADED_PAUSE_S = 5.0
"""With ``session.on_unavailable: degrade``, writes go unfenced this long after Redis failed,
so an outage costs one failed attempt per pause rather than one per checkpoint write."""

TIER = "session"  # heads and locks live in the session tier's Redis


@dataclass(frozen=True, slots=True)
class Head:
    """A thread namespace's head: its latest checkpoint id and how long ago it was set."""

    checkpoint_id: str
    age_ms: int
    raw: str  # as stored, to put back


class ThreadHeads(Protocol):
    """Where heads live (Redis, or the process)."""

    async def advance(
        self, thread_id: str, ns: str, expected: str | None, new: str, *, force: bool = False
    ) -> tuple[bool, Head | None]:
        """Set the head to ``new`` if it is missing, equal to ``expected`` or ``new``, or if
        ``force``. Returns whether it was set, and the head found (None: there was none)."""
        ...

    async def restore(self, thread_id: str, ns: str, new: str, previous: Head | None) -> None:
        """Put ``previous`` back (none: remove the head) if the head is still ``new``."""
        ...

    async def forget(self, *thread_ids: str) -> None:
        """Drop every head of the threads (in one round trip)."""
        ...

    async def read(self, thread_id: str) -> dict[str, str]:
        """The thread's heads as stored: namespace -> ``"<checkpoint id> <ms>"``."""
        ...


# ARGV: namespace, expected id ('' for none), new id, force ('1'), ttl ms.
# Returns {set (1/0), the head found or false, the server's time in ms}.
_ADVANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and ARGV[4] ~= '1' then
  local id = string.match(cur, '^[^ ]+')
  if id ~= ARGV[2] and id ~= ARGV[3] then
    return {0, cur, now}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, cur or false, now}
"""

# ARGV: namespace, new id, previous value ('' for none).
_RESTORE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.match(cur, '^[^ ]+') == ARGV[2] then
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[1], ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  end
  return 1
end
return 0
"""


def _parse(raw: str | None, now_ms: int) -> Head | None:
    if raw is None:
        return None
    checkpoint_id, _, stamp = raw.partition(" ")
    set_at = int(stamp) if stamp.isdigit() else 0
    return Head(checkpoint_id, max(0, now_ms - set_at), raw)


class RedisHeads:
    """Heads in Redis, shared by every worker on the same server (Cluster too: one key)."""

    def __init__(self, client: aioredis.Redis, keys: SessionKeys, masked_url: str) -> None:
        self._client = client
        self._keys = keys
        self._url = masked_url
        self._advance = client.register_script(_ADVANCE)
        self._restore = client.register_script(_RESTORE)

    async def advance(
        self, thread_id: str, ns: str, expected: str | None, new: str, *, force: bool = False
    ) -> tuple[bool, Head | None]:
        args = [ns, expected or "", new, "1" if force else "0", HEAD_TTL_MS]
        with translate_errors(TIER, self._url):
            ok, raw, now_ms = await self._advance(keys=[self._keys.thread_heads(thread_id)], args=args)
        return bool(ok), _parse(raw, int(now_ms))

    async def restore(self, thread_id: str, ns: str, new: str, previous: Head | None) -> None:
        args = [ns, new, previous.raw if previous else ""]
        with translate_errors(TIER, self._url):
            await self._restore(keys=[self._keys.thread_heads(thread_id)], args=args)

    async def forget(self, *thread_ids: str) -> None:
        if not thread_ids:
            return
        # One DEL of many keys (on a Cluster, redis-py sends one per hash slot).
        with translate_errors(TIER, self._url):
            await self._client.delete(*(self._keys.thread_heads(thread_id) for thread_id in thread_ids))

    async def read(self, thread_id: str) -> dict[str, str]:
        with translate_errors(TIER, self._url):
            return dict(await self._client.hgetall(self._keys.thread_heads(thread_id)))


class LocalHeads:
    """Heads in this process (the session tier is fakeredis). Each method runs without an
    ``await`` between its read and its write, so it is atomic on the event loop."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._heads: TTLCache[str, dict[str, str]] = TTLCache(maxsize=maxsize, ttl=HEAD_TTL_MS / 1000)

    async def advance(
        self, thread_id: str, ns: str, expected: str | None, new: str, *, force: bool = False
    ) -> tuple[bool, Head | None]:
        now_ms = int(time.time() * 1000)
        heads = self._heads.get(thread_id) or {}
        found = _parse(heads.get(ns), now_ms)
        if found is not None and not force and found.checkpoint_id not in (expected, new):
            return False, found
        heads[ns] = f"{new} {now_ms}"
        self._heads[thread_id] = heads  # re-inserted: the TTL slides
        return True, found

    async def restore(self, thread_id: str, ns: str, new: str, previous: Head | None) -> None:
        heads = self._heads.get(thread_id)
        if heads is None or heads.get(ns, "").partition(" ")[0] != new:
            return
        if previous is None:
            del heads[ns]
        else:
            heads[ns] = previous.raw

    async def forget(self, *thread_ids: str) -> None:
        for thread_id in thread_ids:
            self._heads.pop(thread_id, None)

    async def read(self, thread_id: str) -> dict[str, str]:
        return dict(self._heads.get(thread_id) or {})


def thread_heads(client: aioredis.Redis, keys: SessionKeys, masked_url: str) -> ThreadHeads:
    """Heads on the session tier's client: in Redis, or in the process for fakeredis."""
    if in_process(client):
        return LocalHeads()
    return RedisHeads(client, keys, masked_url)


@dataclass(frozen=True, slots=True)
class Claim:
    """A head moved for one write, to be put back if the write fails."""

    thread_id: str
    ns: str
    new: str
    previous: Head | None


def mark_loaded(config: RunnableConfig, tup: CheckpointTuple, *, by_id: bool) -> CheckpointTuple:
    """The tuple a guarded load returns: one loaded by id (or from before a checkpoint) carries
    `BRANCH_KEY` (writes on top of it may branch); a latest load clears a key the caller's
    config brought along."""
    configurable = config.get("configurable") or {}
    if by_id:
        value: str | None = str(tup.config["configurable"]["checkpoint_id"])
    elif configurable.get(BRANCH_KEY) is not None:
        value = None
    else:
        return tup
    marked = {**tup.config, "configurable": {**tup.config["configurable"], BRANCH_KEY: value}}
    return tup._replace(config=marked)


class CheckpointFence:
    """Compare-and-sets a thread namespace's head around each fenced checkpoint write.

    Args:
        heads: where heads live.
        saver: the checkpointer's own saver, read on the rare repair path only.
        degrade: on an unreachable Redis, write unfenced (``session.on_unavailable:
            degrade``) instead of raising `BackendUnavailableError`.
        on_degraded: called once per write that went unfenced because Redis was unreachable.
    """

    def __init__(
        self,
        heads: ThreadHeads,
        saver: BaseCheckpointSaver[Any],
        *,
        degrade: bool,
        on_degraded: Callable[[BackendUnavailableError], None] = lambda error: None,
    ) -> None:
        self.heads = heads
        self._saver = saver
        self._degrade = degrade
        self._on_degraded = on_degraded
        self._unfenced_until = 0.0

    async def claim(self, config: RunnableConfig, checkpoint: Checkpoint) -> Claim | None:
        """Move the head for writing ``checkpoint`` on top of the config's checkpoint.

        Returns the claim to undo if the write fails; None when the write goes unfenced.

        Raises:
            ThreadConflictError: another run advanced the thread since this run loaded it.
            BackendUnavailableError: Redis is unreachable and ``degrade`` is off.
        """
        configurable: Mapping[str, Any] = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns") or ROOT_NS
        parent = configurable.get("checkpoint_id") or None
        new = str(checkpoint["id"])
        force = parent is not None and configurable.get(BRANCH_KEY) == parent
        if self._degrade and time.monotonic() < self._unfenced_until:
            return None
        try:
            ok, found = await self.heads.advance(thread_id, ns, parent, new, force=force)
            if not ok:
                assert found is not None
                found = await self._repair(thread_id, ns, parent, new, found)
        except BackendUnavailableError as error:
            if not self._degrade:
                raise
            self._unfenced_until = time.monotonic() + DEGRADED_PAUSE_S
            logger.warning("thread heads unavailable, checkpoint writes go unfenced: %s", error)
            self._on_degraded(error)
            return None
        return Claim(thread_id, ns, new, found)

    async def _repair(
        self, thread_id: str, ns: str, parent: str | None, new: str, found: Head
    ) -> Head | None:
        """Replace a head that is behind the saver, or raise the conflict."""
        latest = await self._saver.aget_tuple(thread_config(thread_id, ns))
        latest_id = None if latest is None else str(latest.checkpoint["id"])
        if latest_id == parent and (
            found.age_ms >= CRASH_GRACE_MS
            or await self._saver.aget_tuple(thread_config(thread_id, ns, found.checkpoint_id)) is not None
        ):
            ok, replaced = await self.heads.advance(thread_id, ns, found.checkpoint_id, new)
            if ok:
                logger.warning(
                    "thread %r: head %r was behind the checkpoints (namespace %r); replaced",
                    thread_id,
                    found.checkpoint_id,
                    ns,
                )
                return replaced
        where = f" (namespace {ns!r})" if ns else ""
        raise ThreadConflictError(
            f"thread {thread_id!r}{where}: another run advanced the thread since this run loaded "
            "it, so this run's checkpoint was not written; retry the turn (it starts from the "
            "thread's new latest checkpoint), or serialize runs with manager.threads.lock",
            thread_id=thread_id,
        )

    async def undo(self, claim: Claim) -> None:
        """After a failed write: put the head back (best effort; repair covers a failure)."""
        try:
            await self.heads.restore(claim.thread_id, claim.ns, claim.new, claim.previous)
        except Exception as error:  # the write's own error is the one to raise
            logger.warning("thread %r: could not put its head back: %s", claim.thread_id, error)

    async def forget(self, *thread_ids: str) -> None:
        """Drop the threads' heads (they were deleted): a thread recreated under an id starts clean."""
        try:
            await self.heads.forget(*thread_ids)
        except BackendUnavailableError as error:
            if not self._degrade:
                raise
            # Left behind, they name checkpoints that no longer exist: repaired after the grace.
            first = thread_ids[0] if thread_ids else None
            logger.warning(
                "%d thread(s) (%r ...): could not drop their heads: %s", len(thread_ids), first, error
            )
            self._on_degraded(error)
