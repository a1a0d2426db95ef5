"""Ownership at the checkpointer: a run that names a user may only open that user's threads.

LangGraph writes the input checkpoint before the first node runs, so an ownership check in the
load node alone would already have let another user's message into the thread. The guard checks
(and for a new thread, claims) ownership in the thread registry at the first checkpointer call
of a run, and caches confirmed owners so steady-state turns cost no extra round trip.
A graph run must name its user; other calls without a user id (``get_state``, tooling,
conformance suites) pass straight through.

The manager also gives it an ``on_load`` hook: the latest checkpoint of a thread is brought to
the current state version (see memory_tiers/state/checkpoints.py) before LangGraph sees it,
and a ``fence``: each checkpoint write of a run compare-and-sets the thread's head first, so a
run that another run of the same thread overtook raises `ThreadConflictError` with nothing
written (see memory_tiers/working/fencing.py). Pending writes (``aput_writes``) are not
fenced: they attach to the checkpoint their task ran on, which a later write fences.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from cachetools import TTLCache
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from memory_tiers.bridge import LoopBridge
from memory_tiers.config import IdKeysConfig
from memory_tiers.context import RUNTIME_KEY, TurnIds, read_id, resolve_ids
from memory_tiers.errors import OwnershipError
from memory_tiers.translate import translate_errors
from memory_tiers.working.chain import is_saver, list_thread
from memory_tiers.working.fencing import CheckpointFence, Claim, mark_loaded

_EXTENDED = (
    "delete_for_runs",
    "adelete_for_runs",
    "copy_thread",
    "acopy_thread",
    "prune",
    "aprune",
    "get_delta_channel_history",
    "aget_delta_channel_history",
)

OwnerLookup = Callable[[str], Awaitable[str | None]]
# Given the latest checkpoint of a thread, returns the one the graph should see (state migration).
LoadHook = Callable[[RunnableConfig, CheckpointTuple], Awaitable[CheckpointTuple]]
ThreadClaim = Callable[[str, str, str | None], Awaitable[object]]


class OwnershipGuardedSaver(BaseCheckpointSaver[Any]):
    """Delegates to ``inner`` after checking the run's user against the thread registry."""

    def __init__(
        self,
        inner: BaseCheckpointSaver[Any],
        *,
        keys: IdKeysConfig,
        owner_of: OwnerLookup,
        claim: ThreadClaim,
        bridge: LoopBridge,
        on_load: LoadHook | None = None,
        stamp: Mapping[str, Any] | None = None,
        fence: CheckpointFence | None = None,
    ) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner
        self.fence = fence
        self._on_load = on_load
        self._stamp = dict(stamp or {})
        self._keys = keys
        self._owner_of = owner_of
        self._claim = claim
        self._bridge = bridge
        # Owners never change while a thread exists; the TTL bounds staleness after a delete.
        self._confirmed: TTLCache[str, str] = TTLCache(maxsize=100_000, ttl=60)

    def _translated(self) -> Any:
        # The saver's driver errors (psycopg, sqlite3, redis) reach callers as memory_tiers
        # errors, a lost connection as the retriable BackendUnavailableError (cause kept).
        return translate_errors("working", type(self.inner).__name__)

    # -- the check ----------------------------------------------------------------------

    def _ids(self, config: RunnableConfig) -> TurnIds | None:
        if read_id(config, self._keys.thread) is None:
            return None
        in_graph_run = RUNTIME_KEY in (config.get("configurable") or {})
        if read_id(config, self._keys.user) is None and not in_graph_run:
            return None  # administration (get_state, tooling): no user, no tenant to protect
        # A graph run must say whose thread it is: a thread id alone grants nothing.
        return resolve_ids(config, self._keys)

    async def _check(self, config: RunnableConfig, *, claim: bool) -> None:
        ids = self._ids(config)
        if ids is None:
            return
        user_id, thread_id, session_id = ids.user_id, ids.thread_id, ids.session_id
        assert thread_id is not None
        if self._confirmed.get(thread_id) == user_id:
            return
        owner = await self._owner_of(thread_id)
        if owner is None and claim:
            await self._claim(user_id, thread_id, session_id)  # raises OwnershipError if lost
            owner = user_id
        if owner is None:
            return
        if owner != user_id:
            raise OwnershipError(f"thread {thread_id!r} belongs to another user")
        self._confirmed[thread_id] = user_id

    def _stamped(self, config: RunnableConfig, metadata: CheckpointMetadata) -> CheckpointMetadata:
        """A run's checkpoints record what wrote them (the state version), for migrations."""
        if not self._stamp or self._ids(config) is None:
            return metadata
        return {**metadata, **self._stamp}  # type: ignore[typeddict-item]

    def _check_sync(self, config: RunnableConfig, *, claim: bool) -> None:
        if self._ids(config) is not None:
            self._bridge.run(self._check(config, claim=claim))

    # -- fencing ------------------------------------------------------------------------

    def _fenced(self, config: RunnableConfig) -> bool:
        return (
            self.fence is not None
            and (config.get("configurable") or {}).get("thread_id") is not None
            and self._ids(config) is not None
        )

    def _marked(
        self, config: RunnableConfig, tup: CheckpointTuple | None, *, by_id: bool
    ) -> CheckpointTuple | None:
        """A loaded tuple, marked for branching when it was asked for by id (fencing.py)."""
        if tup is None or not self._fenced(config):
            return tup
        return mark_loaded(config, tup, by_id=by_id)

    def _by_id(self, config: RunnableConfig) -> bool:
        return bool((config.get("configurable") or {}).get("checkpoint_id"))

    async def _claim_head(self, config: RunnableConfig, checkpoint: Checkpoint) -> Claim | None:
        if not self._fenced(config):
            return None
        assert self.fence is not None
        with self._translated():
            return await self.fence.claim(config, checkpoint)

    async def _undo(self, claim: Claim | None) -> None:
        if claim is not None and self.fence is not None:
            await self.fence.undo(claim)

    async def _forget_heads(self, *thread_ids: str) -> None:
        if self.fence is not None and thread_ids:
            await self.fence.forget(*map(str, thread_ids))

    # -- async API ----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        await self._check(config, claim=False)
        with self._translated():
            tup = await self.inner.aget_tuple(config)
        if tup is not None and self._on_load is not None:
            tup = await self._on_load(config, tup)
        return self._marked(config, tup, by_id=self._by_id(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None:
            await self._check(config, claim=False)
        # A listing from before a checkpoint is how a subgraph replaying with its parent loads
        # its starting point: writes on top of what it yields may branch.
        mark = config is not None and before is not None and self._fenced(config)
        if config is not None and (config.get("configurable") or {}).get("thread_id") is not None:
            listed = list_thread(self.inner, config, filter=filter, before=before, limit=limit)
        else:
            listed = self.inner.alist(config, filter=filter, before=before, limit=limit)
        with self._translated():
            async for item in listed:
                yield mark_loaded(config, item, by_id=True) if mark and config is not None else item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self._check(config, claim=True)
        claim = await self._claim_head(config, checkpoint)  # raises ThreadConflictError
        try:
            with self._translated():
                return await self.inner.aput(
                    config, checkpoint, self._stamped(config, metadata), new_versions
                )
        except BaseException:
            await self._undo(claim)
            raise

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._check(config, claim=True)
        with self._translated():
            await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self._confirmed.pop(thread_id, None)
        if is_saver(self.inner, "AsyncRedisSaver"):
            # Its adelete_thread takes 10,000 documents a call, counting a case sibling's ("t-1"
            # for "T-1") among them: memory_tiers/working/redis_saver.py takes them all.
            from memory_tiers.working import redis_saver

            await redis_saver.delete_threads(self.inner, [thread_id])
        else:
            await self.inner.adelete_thread(thread_id)
        await self._forget_heads(thread_id)  # a thread recreated under this id starts clean

    async def forget_owners(self, thread_ids: Sequence[str]) -> None:
        """What `adelete_thread` does besides deleting, for threads deleted on ``inner`` directly
        (a batch delete, memory_tiers/working/thread_data.py): drop their cached owners, so no
        run skips the registry for them, and their fencing heads (one call for all of them)."""
        for thread_id in thread_ids:
            self._confirmed.pop(thread_id, None)
        await self._forget_heads(*thread_ids)

    # -- sync API -----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        self._check_sync(config, claim=False)
        with self._translated():
            tup = self.inner.get_tuple(config)
        if tup is not None and self._on_load is not None:
            tup = self._bridge.run(self._on_load(config, tup))
        return self._marked(config, tup, by_id=self._by_id(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        if config is not None:
            self._check_sync(config, claim=False)
        # No case sibling to drop here: AsyncRedisSaver has no synchronous list (list_thread).
        listed = self.inner.list(config, filter=filter, before=before, limit=limit)
        if config is None or before is None or not self._fenced(config):
            return listed
        return (mark_loaded(config, item, by_id=True) for item in listed)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        self._check_sync(config, claim=True)
        claim = self._bridge.run(self._claim_head(config, checkpoint)) if self._fenced(config) else None
        try:
            with self._translated():
                return self.inner.put(config, checkpoint, self._stamped(config, metadata), new_versions)
        except BaseException:
            if claim is not None:
                self._bridge.run(self._undo(claim))
            raise

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._check_sync(config, claim=True)
        with self._translated():
            self.inner.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        self._confirmed.pop(thread_id, None)
        self.inner.delete_thread(thread_id)
        if self.fence is not None:
            self._bridge.run(self._forget_heads(thread_id))

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    @property
    def config_specs(self) -> list[Any]:
        return self.inner.config_specs


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: OwnershipGuardedSaver, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    method.__name__ = name
    return method


def guard_checkpointer(inner: BaseCheckpointSaver[Any], **kwargs: Any) -> OwnershipGuardedSaver:
    """Wrap ``inner``; optional capabilities (copy_thread, prune, ...) are exposed only if it has them."""
    extra = {
        name: _delegate(name)
        for name in _EXTENDED
        if getattr(type(inner), name, None) is not getattr(BaseCheckpointSaver, name, None)
    }
    cls = type(f"OwnershipGuarded{type(inner).__name__}", (OwnershipGuardedSaver,), extra)
    return cls(inner, **kwargs)
