"""`manager.threads`: create, list, inspect, time-travel, fork, diff, archive and delete threads.

Every call names the user and is checked against the thread registry: a thread id alone grants
nothing, and another user's thread raises `OwnershipError` before anything is read or written.
Operations go through LangGraph's checkpointer API, so they work the same on every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from memory_tiers.errors import NotFoundError, OwnershipError, UsageError
from memory_tiers.ids import validate_id
from memory_tiers.long_term.models import ThreadRecord
from memory_tiers.long_term.registry import ThreadPage, ThreadRegistry
from memory_tiers.observability import instrumented, manager_telemetry
from memory_tiers.threads_archive import ArchiveResult, archive_thread
from memory_tiers.working.chain import (
    ROOT_NS,
    copy_chain,
    load_thread,
    parent_id,
    root_history,
    thread_config,
)
from memory_tiers.working.chain import checkpoint_id as id_of
from memory_tiers.working.diff import StateDiff, diff_values
from memory_tiers.working.run_lock import ThreadLocks, thread_locks
from memory_tiers.working.state import channel_values
from memory_tiers.working.thread_data import delete_checkpoints

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint of a thread's history, newest first in `ThreadsAPI.history`."""

    checkpoint_id: str
    parent_checkpoint_id: str | None
    created_at: str
    step: int | None
    source: str | None
    pending_writes: int

    @classmethod
    def of(cls, tup: CheckpointTuple) -> CheckpointInfo:
        metadata = tup.metadata or {}
        return cls(
            checkpoint_id=id_of(tup),
            parent_checkpoint_id=parent_id(tup),
            created_at=tup.checkpoint["ts"],
            step=metadata.get("step"),
            source=metadata.get("source"),
            pending_writes=len(tup.pending_writes or ()),
        )


@instrumented("threads", telemetry=manager_telemetry, bind=True)
class ThreadsAPI:
    """Thread lifecycle for one manager; every call is owner-checked."""

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager
        self._locks: tuple[object, ThreadLocks] | None = None  # (the session store, its locks)

    @property
    def _registry(self) -> ThreadRegistry:
        return self._manager.long_term.registry

    @property
    def _saver(self) -> BaseCheckpointSaver[Any]:
        return self._manager.checkpointer.inner

    def _run_config(self, user_id: str, thread_id: str, checkpoint: str | None = None) -> dict[str, Any]:
        keys = self._manager.config.ids
        configurable: dict[str, Any] = {keys.user: user_id, keys.thread: thread_id}
        if checkpoint is not None:
            # InMemorySaver and the SQLite saver hand a by-id load back with the caller's own
            # config, and LangGraph's update_state writes on top of that: it must name the
            # namespace.
            configurable |= {"checkpoint_ns": "", "checkpoint_id": checkpoint}
        return {"configurable": configurable}

    async def _owned(self, user_id: str, thread_id: str) -> ThreadRecord:
        user_id, thread_id = validate_id("user_id", user_id), validate_id("thread_id", thread_id)
        record = await self._registry.get(thread_id)
        if record is None:
            raise NotFoundError(f"thread {thread_id!r} of user {user_id!r} does not exist")
        if record.user_id != user_id:
            raise OwnershipError(f"thread {thread_id!r} belongs to another user")
        return record

    async def _checkpoint(self, thread_id: str, checkpoint: str | None) -> CheckpointTuple:
        if checkpoint is not None:
            validate_id("thread_id", checkpoint)  # checkpoint ids use the same safe alphabet
        tup = await self._saver.aget_tuple(thread_config(thread_id, ROOT_NS, checkpoint))
        if tup is None:
            what = f"checkpoint {checkpoint!r}" if checkpoint else "any checkpoint"
            raise NotFoundError(f"thread {thread_id!r} has no {what}")
        return tup

    def _thread_locks(self) -> ThreadLocks:
        store = self._manager.session_store
        if self._locks is None or self._locks[0] is not store:  # opened (again)
            lease = self._manager.config.working.lock.lease.total_seconds()
            self._locks = (
                store,
                thread_locks(store.client, store.keys, lease=lease, masked_url=store.masked_url),
            )
        return self._locks[1]

    # -- one run at a time --------------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self, user_id: str, thread_id: str, *, timeout: float | timedelta | None = None
    ) -> AsyncIterator[None]:
        """Hold the thread's run lock for the block: runs of the thread inside ``lock`` blocks,
        in any worker sharing the session tier's Redis, run one at a time.

        ``async with manager.threads.lock(user, thread): await graph.ainvoke(...)``. It is a
        lease (``working.lock.lease``) renewed while the block runs, so a worker that dies
        holding it frees it after the lease; with the embedded fakeredis it is an
        ``asyncio.Lock``, serializing the runs of this process only. A thread nobody owns
        yet can be locked (its first run claims it).

        Args:
            timeout: how long to wait for another run's lock; ``working.lock.timeout`` by default.

        Raises:
            OwnershipError: the thread belongs to another user.
            ThreadLockTimeoutError: the lock stayed held beyond ``timeout``.
        """
        user_id, thread_id = validate_id("user_id", user_id), validate_id("thread_id", thread_id)
        record = await self._registry.get(thread_id)
        if record is not None and record.user_id != user_id:
            raise OwnershipError(f"thread {thread_id!r} belongs to another user")
        if timeout is None:
            timeout = self._manager.config.working.lock.timeout
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        async with self._thread_locks().hold(user_id, thread_id, seconds):
            yield

    # -- the registry -------------------------------------------------------------------

    async def create(
        self,
        user_id: str,
        thread_id: str | None = None,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> ThreadRecord:
        """Register a new thread for ``user_id`` (a random id when none is given).

        Raises:
            OwnershipError: another user holds the id.
            UsageError: the user already has a thread with this id.
        """
        user_id = validate_id("user_id", user_id)
        thread_id = validate_id("thread_id", thread_id or str(uuid.uuid4()))
        if session_id is not None:
            validate_id("session_id", session_id)
        return await self._registry.create(
            user_id, thread_id, now=_now(), namespace=namespace, metadata=metadata, session_id=session_id
        )

    async def list(
        self,
        user_id: str,
        *,
        status: str | None = None,
        namespace: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ThreadPage:
        """A page of the user's threads from the registry, most recently active first.

        No checkpoint is read. Filter by ``status``, ``namespace`` or top-level ``metadata``
        values; pass the page's ``next_cursor`` to get the next one.
        """
        return await self._registry.list(
            validate_id("user_id", user_id),
            status=status,
            namespace=namespace,
            metadata=metadata,
            limit=limit,
            cursor=cursor,
        )

    async def get(self, user_id: str, thread_id: str) -> ThreadRecord:
        """The registry row of the user's thread."""
        return await self._owned(user_id, thread_id)

    # -- working memory -----------------------------------------------------------------

    async def history(
        self, user_id: str, thread_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[CheckpointInfo]:
        """The thread's checkpoints (root graph), newest first."""
        record = await self._owned(user_id, thread_id)
        if before is not None:
            validate_id("thread_id", before)  # checkpoint ids use the same safe alphabet
        return [
            CheckpointInfo.of(tup)
            async for tup in root_history(self._saver, record.thread_id, before=before, limit=limit)
        ]

    async def state(self, user_id: str, thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
        """The state values stored at a checkpoint (the latest by default)."""
        record = await self._owned(user_id, thread_id)
        return await channel_values(self._saver, await self._checkpoint(record.thread_id, checkpoint_id))

    async def replay(
        self, graph: Any, user_id: str, thread_id: str, checkpoint_id: str, *, context: Any = None
    ) -> Any:
        """Run ``graph`` again from a past checkpoint (LangGraph time travel): the steps after it
        are re-executed and written as a new branch; the old ones stay in the history."""
        record = await self._owned(user_id, thread_id)
        await self._checkpoint(record.thread_id, checkpoint_id)
        return await graph.ainvoke(None, self._run_config(user_id, thread_id, checkpoint_id), context=context)

    async def update_state(
        self,
        graph: Any,
        user_id: str,
        thread_id: str,
        values: dict[str, Any] | None,
        *,
        checkpoint_id: str | None = None,
        as_node: str | None = None,
    ) -> str:
        """Write ``values`` as a new checkpoint on top of ``checkpoint_id`` (the latest by
        default), as if ``as_node`` had returned them; returns the new checkpoint's id.
        Running the graph afterwards continues from there."""
        record = await self._owned(user_id, thread_id)
        if checkpoint_id is not None:
            await self._checkpoint(record.thread_id, checkpoint_id)
        config = await graph.aupdate_state(
            self._run_config(user_id, thread_id, checkpoint_id), values, as_node=as_node
        )
        return str(config["configurable"]["checkpoint_id"])

    async def fork(
        self,
        user_id: str,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        new_thread_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ThreadRecord:
        """Copy the thread up to a checkpoint (the latest by default) into a new thread.

        The whole parent chain is copied with its pending writes, so the new thread resumes
        interrupts and rebuilds delta channels exactly as the original would from that point.
        The new thread is registered as ``forking`` first and ``active`` once complete; calling
        fork again with the same ``new_thread_id`` finishes an interrupted copy.

        Raises:
            UsageError: ``new_thread_id`` is already a complete thread.
        """
        source = await self._owned(user_id, thread_id)
        head = checkpoint_id or id_of(await self._checkpoint(source.thread_id, None))
        await self._checkpoint(source.thread_id, head)
        target = validate_id("thread_id", new_thread_id or str(uuid.uuid4()))
        existing = await self._registry.get(target)
        if existing is None:
            await self._registry.create(
                user_id,
                target,
                now=_now(),
                namespace=source.namespace,
                metadata={**source.metadata, **(metadata or {}), "forked_from": source.thread_id},
                session_id=source.session_id,
                status="forking",
            )
        elif existing.user_id != user_id:
            raise OwnershipError(f"thread {target!r} belongs to another user")
        elif existing.status != "forking":
            raise UsageError(f"thread {target!r} already exists")
        await copy_chain(self._saver, await load_thread(self._saver, source.thread_id), head, target)
        await self._registry.set_status(target, "active", expected=["forking"])
        return await self._owned(user_id, target)

    async def diff(
        self, user_id: str, thread_id: str, from_checkpoint: str, to_checkpoint: str | None = None
    ) -> StateDiff:
        """What changed in the state between two checkpoints (``to`` defaults to the latest)."""
        record = await self._owned(user_id, thread_id)
        before = await channel_values(self._saver, await self._checkpoint(record.thread_id, from_checkpoint))
        after = await channel_values(self._saver, await self._checkpoint(record.thread_id, to_checkpoint))
        return diff_values(before, after)

    # -- ending a thread ----------------------------------------------------------------

    async def archive(self, user_id: str, thread_id: str) -> ArchiveResult:
        """Summarize the thread into long-term memory, then drop its checkpoints.

        Order makes it crash-safe: the thread is marked ``archiving``, its facts and summary are
        written (idempotently, keyed by the thread and its last checkpoint), and only then are the
        checkpoints deleted and the thread marked ``archived``. Calling archive again after a
        crash finishes the job without a second summary.
        """
        record = await self._owned(user_id, thread_id)
        return await archive_thread(self._manager, record)

    async def delete(self, user_id: str, thread_id: str) -> bool:
        """Delete the thread's checkpoints and its registry row (facts and archives learned from
        it stay in long-term memory). Returns False if the user has no such thread."""
        try:
            record = await self._owned(user_id, thread_id)
        except NotFoundError:
            return False
        # Checkpoints first: a crash leaves the row, so deleting again finishes the job.
        await delete_checkpoints(self._manager.checkpointer, record.thread_id)
        return await self._registry.remove(record.user_id, record.thread_id)
