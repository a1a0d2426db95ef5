"""A thread's checkpoints as JSON data (for a user export), and deleting all of them: of one
thread, or of many threads at once (all of a user's, for ``users.forget``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from memory_tiers.errors import BackendError
from memory_tiers.jsonable import to_json
from memory_tiers.translate import translate_errors
from memory_tiers.working.chain import is_saver, list_thread
from memory_tiers.working.guard import OwnershipGuardedSaver
from memory_tiers.working.pruning import pg_cursor
from memory_tiers.working.state import channel_values

# Deletes of one thread on a saver memory_tiers has no batch delete for, before giving up: a
# saver may delete in capped batches (as AsyncRedisSaver's adelete_thread does, 10,000 a call).
MAX_DELETE_ROUNDS = 100
THREAD_BATCH = 500  # threads deleted together by `delete_threads` (one statement on PostgreSQL)


def _thread(thread_id: str) -> RunnableConfig:
    # No user in the config: the ownership guard's administration path, and every namespace.
    return {"configurable": {"thread_id": thread_id}}


def checkpoint_record(tup: CheckpointTuple, values: dict[str, Any]) -> dict[str, Any]:
    """One checkpoint: its ids, timestamp, metadata, channel ``values`` and pending writes, as JSON."""
    configurable = tup.config["configurable"]
    parent = (tup.parent_config or {}).get("configurable") or {}
    return {
        "id": configurable["checkpoint_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "parent_id": parent.get("checkpoint_id"),
        "ts": tup.checkpoint["ts"],
        "metadata": to_json(tup.metadata),
        "channel_values": to_json(values),
        "pending_writes": [
            {"task_id": task_id, "channel": channel, "value": to_json(value)}
            for task_id, channel, value in tup.pending_writes or ()
        ],
    }


async def export_checkpoints(saver: BaseCheckpointSaver[Any], thread_id: str) -> list[dict[str, Any]]:
    """Every checkpoint of the thread, in every namespace, newest first (as the saver lists them),
    with a ``messages`` channel stored as deltas rebuilt, so the export shows each state whole.

    The listing is read to its end before any delta history is: AsyncSqliteSaver holds its
    connection lock for the whole of an ``alist``, so a read inside the loop would wait forever."""
    tuples = [tup async for tup in list_thread(saver, _thread(thread_id))]
    return [checkpoint_record(tup, await channel_values(saver, tup)) for tup in tuples]


async def _has_checkpoints(saver: BaseCheckpointSaver[Any], thread_id: str) -> bool:
    async for _ in list_thread(saver, _thread(thread_id), limit=1):
        return True
    return False


async def delete_checkpoints(checkpointer: OwnershipGuardedSaver, thread_id: str) -> None:
    """Delete every checkpoint and write of the thread, and what the guard holds of it (its
    cached owner, its fencing heads).

    On the savers `delete_threads` has a batch delete for, that delete (of this one thread).
    Others get ``adelete_thread`` through the guard, repeated while the thread still lists a
    checkpoint (a saver may delete in capped batches); the last call is a delete that found
    nothing before it, so no trace a listing may leave remains.

    Raises:
        BackendError: checkpoints are still listed after `MAX_DELETE_ROUNDS` deletes.
    """
    if _batch_delete(checkpointer.inner) is not None:
        await delete_threads(checkpointer, [thread_id])
        return
    for _ in range(MAX_DELETE_ROUNDS):
        found = await _has_checkpoints(checkpointer.inner, thread_id)
        await checkpointer.adelete_thread(thread_id)
        if not found:
            return
    raise BackendError(
        f"working tier: thread {thread_id!r} still has checkpoints after {MAX_DELETE_ROUNDS} deletes"
    )


# -- many threads at once ------------------------------------------------------------------------
# The savers' own tables and dictionaries, as memory_tiers/working/pruning.py uses them: each
# backend removes every row of a batch of threads in one go (Redis: by search, a hundred threads each).


async def _delete_memory(saver: Any, thread_ids: Sequence[str]) -> None:
    # One pass over the dictionaries for the batch (the saver's delete_thread scans them per thread).
    doomed = set(thread_ids)
    for thread_id in doomed:
        saver.storage.pop(thread_id, None)
    for table in (saver.writes, saver.blobs):
        for key in [key for key in table if key[0] in doomed]:
            del table[key]


async def _delete_sqlite(saver: Any, thread_ids: Sequence[str]) -> None:
    rows = [(thread_id,) for thread_id in thread_ids]
    async with saver.lock:
        # One transaction, so one commit (and one sync to disk) for the batch, not one per thread.
        try:
            for table in ("writes", "checkpoints"):
                await saver.conn.executemany(f"DELETE FROM {table} WHERE thread_id = ?", rows)
        except BaseException:
            # Nothing half-deleted stays open on the saver's shared connection (its next write
            # would commit it).
            await saver.conn.rollback()
            raise
        await saver.conn.commit()


# One statement: the batch's writes, blobs and checkpoints, each read by the thread_id indexes.
_PG_DELETE_THREADS = """
WITH writes AS (DELETE FROM checkpoint_writes WHERE thread_id = ANY(%(batch)s)),
blobs AS (DELETE FROM checkpoint_blobs WHERE thread_id = ANY(%(batch)s))
DELETE FROM checkpoints WHERE thread_id = ANY(%(batch)s)
"""


async def _delete_postgres(saver: Any, thread_ids: Sequence[str]) -> None:
    async with pg_cursor(saver, binary=True) as cur:
        await cur.execute(_PG_DELETE_THREADS, {"batch": list(thread_ids)})


async def _delete_redis(saver: Any, thread_ids: Sequence[str]) -> None:
    from memory_tiers.working import redis_saver

    await redis_saver.delete_threads(saver, thread_ids)


BatchDelete = Callable[[Any, Sequence[str]], Awaitable[None]]
_BATCH_DELETES: dict[str, BatchDelete] = {
    "InMemorySaver": _delete_memory,
    "AsyncSqliteSaver": _delete_sqlite,
    "AsyncPostgresSaver": _delete_postgres,
    "AsyncRedisSaver": _delete_redis,
}


def _batch_delete(saver: BaseCheckpointSaver[Any]) -> BatchDelete | None:
    return next((fn for name, fn in _BATCH_DELETES.items() if is_saver(saver, name)), None)


async def delete_threads(checkpointer: OwnershipGuardedSaver, thread_ids: Sequence[str]) -> None:
    """Delete every checkpoint, blob and write of the threads, and what the guard holds of them
    (cached owners, fencing heads), as `delete_checkpoints` of each thread would.

    In batches of `THREAD_BATCH`: on InMemorySaver, AsyncSqliteSaver and AsyncPostgresSaver a
    batch is one delete (one pass, one transaction, one statement), on AsyncRedisSaver a
    search and a pipeline of deletes per thousand documents of a hundred threads
    (memory_tiers/working/redis_saver.py); each batch is followed by one
    `OwnershipGuardedSaver.forget_owners`; other savers go thread by thread through
    `delete_checkpoints`. A batch's owners and heads are
    forgotten only once its checkpoints are gone, so a call that failed part way is finished by
    calling it again with the same threads.

    Raises:
        BackendError: a thread still has checkpoints after `MAX_DELETE_ROUNDS` deletes.
    """
    saver = checkpointer.inner
    delete = _batch_delete(saver)
    if delete is None:
        for thread_id in thread_ids:
            await delete_checkpoints(checkpointer, thread_id)
        return
    for start in range(0, len(thread_ids), THREAD_BATCH):
        batch = [str(thread_id) for thread_id in thread_ids[start : start + THREAD_BATCH]]
        with translate_errors("working", type(saver).__name__):
            await delete(saver, batch)
        await checkpointer.forget_owners(batch)
