"""The backend-specific part of retention: reading threads' checkpoint chains cheaply, and
removing chosen checkpoints, on each LangGraph checkpointer. What to remove is decided once,
in `memory_tiers.working.chain.plan_prune`; the readers here only read what it needs (ids,
parents, formats, channel versions, which delta channels hold a value) and the pruners only
delete.

Both work on a batch of threads: on PostgreSQL one query reads a batch's chains and one
transaction prunes it; on SQLite likewise; on memory and Redis thread by thread.

LangGraph's savers offer no "delete these checkpoints" call (their ``prune`` keeps the latest
one only, and refuses or breaks threads that use delta channels), so the readers and pruners
use the savers' own tables and dictionaries, the layout of the package versions this project
pins.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from memory_tiers.errors import UsageError
from memory_tiers.translate import translate_errors
from memory_tiers.working.chain import (
    SENDS_IN_CHECKPOINT,
    CheckpointInfo,
    PrunePlan,
    delta_channels,
    is_saver,
)

TIER = "working"

ThreadChains = dict[str, dict[str, dict[str, CheckpointInfo]]]  # thread -> namespace -> id -> info
Reader = Callable[[BaseCheckpointSaver[Any], Sequence[str]], Awaitable[ThreadChains]]
Pruner = Callable[[BaseCheckpointSaver[Any], Mapping[str, PrunePlan]], Awaitable[int]]


@dataclass(frozen=True)
class _Backend:
    read: Reader
    prune: Pruner


def _chains(thread_ids: Sequence[str]) -> ThreadChains:
    return {thread_id: {} for thread_id in thread_ids}


def _info(
    cid: str, parent: str | None, checkpoint: Mapping[str, Any], metadata: Any, holds: set[str]
) -> CheckpointInfo:
    return CheckpointInfo(
        id=cid,
        parent=parent or None,
        format=int(checkpoint.get("v") or SENDS_IN_CHECKPOINT),
        channel_versions=dict(checkpoint.get("channel_versions") or {}),
        delta_channels=delta_channels(metadata),
        holds=frozenset(holds),
    )


# -- memory ------------------------------------------------------------------------------------


async def _read_memory(saver: InMemorySaver, thread_ids: Sequence[str]) -> ThreadChains:
    # Checkpoints are stored without their values; a channel has a value when its blob at the
    # checkpoint's version is not the "empty" marker. Only the namespace's delta channels are
    # looked up (the only ones a plan asks about).
    chains = _chains(thread_ids)
    for thread_id in thread_ids:
        for ns, stored in saver.storage.get(thread_id, {}).items():
            decoded = [
                (cid, parent, saver.serde.loads_typed(checkpoint_b), saver.serde.loads_typed(metadata_b))
                for cid, (checkpoint_b, metadata_b, parent) in stored.items()
            ]
            asked = frozenset().union(*(delta_channels(metadata) for *_, metadata in decoded))
            chain = chains[thread_id].setdefault(ns, {})
            for cid, parent, checkpoint, metadata in decoded:
                versions = checkpoint["channel_versions"]
                holds = {
                    channel
                    for channel in asked & versions.keys()
                    if saver.blobs.get((thread_id, ns, channel, versions[channel]), ("empty",))[0] != "empty"
                }
                chain[cid] = _info(cid, parent, checkpoint, metadata, holds)
    return chains


async def _prune_memory(saver: InMemorySaver, plans: Mapping[str, PrunePlan]) -> int:
    for thread_id, plan in plans.items():
        for ns, ids in plan.delete.items():
            stored = saver.storage.get(thread_id, {}).get(ns, {})
            for cid in ids:
                stored.pop(cid, None)
                saver.writes.pop((thread_id, ns, cid), None)
            for channel, version in plan.freed_blobs.get(ns, ()):
                for stored_version in _stored_versions(version):
                    saver.blobs.pop((thread_id, ns, channel, stored_version), None)
    return sum(plan.checkpoints for plan in plans.values())


def _stored_versions(version: str) -> tuple[str | int | float, ...]:
    # A plan names versions as text; InMemorySaver's are text too, but a subclass may keep the
    # base saver's integer versions (or floats), the keys of its blobs.
    if not version.replace(".", "", 1).isdecimal():
        return (version,)
    return (version, float(version)) if "." in version else (version, int(version))


# -- SQLite ------------------------------------------------------------------------------------


def _skip_ext(code: int, data: bytes) -> None:
    return None


def _load_skipping_values(saver: Any, kind: str, data: bytes) -> Any:
    """A stored checkpoint with its channel values' objects left undecoded: LangGraph's msgpack
    encodes every object (messages, snapshots ...) as an extension, skipped here unread."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    if kind == "msgpack" and isinstance(saver.serde, JsonPlusSerializer):
        import ormsgpack

        return ormsgpack.unpackb(data, ext_hook=_skip_ext, option=ormsgpack.OPT_NON_STR_KEYS)
    return saver.serde.loads_typed((kind, data))


async def _read_sqlite(saver: Any, thread_ids: Sequence[str]) -> ThreadChains:
    # AsyncSqliteSaver keeps values inside the checkpoint: it is read, but not its pending
    # writes (a query per checkpoint in ``alist``) nor its objects.
    chains = _chains(thread_ids)
    async with saver.lock, saver.conn.cursor() as cur:
        await cur.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
            "metadata FROM checkpoints WHERE thread_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(thread_ids)),),
        )
        rows = await cur.fetchall()
    for thread_id, ns, cid, parent, kind, data, metadata in rows:
        checkpoint = _load_skipping_values(saver, kind, data)
        holds = set(checkpoint.get("channel_values") or ())
        meta = json.loads(metadata) if metadata is not None else {}
        chains[thread_id].setdefault(ns, {})[cid] = _info(cid, parent, checkpoint, meta, holds)
    return chains


async def _prune_sqlite(saver: Any, plans: Mapping[str, PrunePlan]) -> int:
    rows = [
        (thread_id, ns, cid)
        for thread_id, plan in plans.items()
        for ns, ids in plan.delete.items()
        for cid in sorted(ids)
    ]
    where = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
    async with saver.lock:
        # One transaction: a crash leaves the batch as it was or pruned, never half.
        await saver.conn.executemany(f"DELETE FROM writes WHERE {where}", rows)
        await saver.conn.executemany(f"DELETE FROM checkpoints WHERE {where}", rows)
        await saver.conn.commit()
    return len(rows)


# -- PostgreSQL --------------------------------------------------------------------------------

# Per checkpoint, what the saver stores of it in ``checkpoints``: primitive values inline in the
# JSONB (so they have no blob), a delta snapshot as an inline ``true`` with a blob behind it,
# other values as rows of checkpoint_blobs.
_PG_CHAINS = f"""
SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    coalesce((checkpoint ->> 'v')::int, {SENDS_IN_CHECKPOINT}) AS v,
    checkpoint -> 'channel_versions' AS channel_versions,
    ARRAY(SELECT key FROM jsonb_each(CASE WHEN jsonb_typeof(checkpoint -> 'channel_values') = 'object'
        THEN checkpoint -> 'channel_values' END)) AS present,
    ARRAY(SELECT key FROM jsonb_each(CASE WHEN jsonb_typeof(checkpoint -> 'channel_values') = 'object'
        THEN checkpoint -> 'channel_values' END) WHERE value <> 'true'::jsonb) AS inline,
    ARRAY(SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(metadata -> 'counters_since_delta_snapshot')
        = 'object' THEN metadata -> 'counters_since_delta_snapshot' END)) AS deltas
FROM checkpoints WHERE thread_id = ANY(%s)
"""
# The blobs of the delta channels that hold a value: a channel holds one at a checkpoint when
# its blob at the checkpoint's version is not the "empty" marker (as the saver loads it).
_PG_DELTA_BLOBS = """
SELECT thread_id, checkpoint_ns, channel, version FROM checkpoint_blobs
WHERE thread_id = ANY(%s) AND channel = ANY(%s) AND type <> 'empty'
"""
# One statement for a batch: its checkpoints, their writes and the blobs only they used, each
# key once. The thread filter keeps every scan to the batch's rows (the saver's thread_id
# indexes) however large the tables are.
_PG_PRUNE = """
WITH doomed AS (
    SELECT * FROM unnest(%(threads)s::text[], %(namespaces)s::text[], %(ids)s::text[])
        AS d(thread_id, checkpoint_ns, checkpoint_id)
), freed AS (
    SELECT * FROM unnest(%(blob_threads)s::text[], %(blob_namespaces)s::text[],
        %(channels)s::text[], %(versions)s::text[]) AS f(thread_id, checkpoint_ns, channel, version)
), writes AS (
    DELETE FROM checkpoint_writes AS w USING doomed AS d
    WHERE w.thread_id = ANY(%(batch)s) AND w.thread_id = d.thread_id
        AND w.checkpoint_ns = d.checkpoint_ns AND w.checkpoint_id = d.checkpoint_id
), blobs AS (
    DELETE FROM checkpoint_blobs AS b USING freed AS f
    WHERE b.thread_id = ANY(%(batch)s) AND b.thread_id = f.thread_id
        AND b.checkpoint_ns = f.checkpoint_ns AND b.channel = f.channel AND b.version = f.version
)
DELETE FROM checkpoints AS c USING doomed AS d
WHERE c.thread_id = ANY(%(batch)s) AND c.thread_id = d.thread_id
    AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id
"""


@asynccontextmanager
async def pg_cursor(saver: Any, *, binary: bool = False) -> AsyncIterator[Any]:
    """A cursor in a transaction on the saver's connection; ``binary`` for large array
    parameters, which cost half as much to send so."""
    from psycopg import AsyncConnection
    from psycopg.rows import tuple_row

    if isinstance(saver.conn, AsyncConnection):
        async with (
            saver.lock,
            saver.conn.transaction(),
            saver.conn.cursor(binary=binary, row_factory=tuple_row) as cur,
        ):
            yield cur
    else:
        async with (
            saver.conn.connection() as conn,
            conn.transaction(),
            conn.cursor(binary=binary, row_factory=tuple_row) as cur,
        ):
            yield cur


async def _read_postgres(saver: Any, thread_ids: Sequence[str]) -> ThreadChains:
    chains = _chains(thread_ids)
    async with pg_cursor(saver) as cur:
        await cur.execute(_PG_CHAINS, (list(thread_ids),))
        rows = await cur.fetchall()
        delta_threads = {row[0] for row in rows if row[8]}
        deltas = sorted({channel for row in rows for channel in row[8]})
        blobs: set[tuple[str, str, str, str]] = set()
        if deltas:
            await cur.execute(_PG_DELTA_BLOBS, (sorted(delta_threads), deltas))
            blobs = {tuple(row) for row in await cur.fetchall()}  # type: ignore[misc]
    nothing: frozenset[str] = frozenset()
    for thread_id, ns, cid, parent, v, versions, present, inline, counted in rows:
        versions = versions or {}
        holds = nothing  # only asked about for delta channels
        if thread_id in delta_threads:
            held = {c for c in deltas if c in versions and (thread_id, ns, c, str(versions[c])) in blobs}
            holds = frozenset(present).union(held)
        chains[thread_id].setdefault(ns, {})[cid] = CheckpointInfo(
            id=cid,
            parent=parent or None,
            format=v,
            channel_versions=versions,
            delta_channels=frozenset(counted) if counted else nothing,
            holds=holds,
            inline=frozenset(inline),
        )
    return chains


def _columns(rows: Sequence[tuple[str, ...]], width: int) -> list[list[str]]:
    """Rows as ``width`` parallel arrays, for ``unnest``."""
    return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in range(width)]


async def _prune_postgres(saver: Any, plans: Mapping[str, PrunePlan]) -> int:
    doomed = [
        (thread_id, ns, cid)
        for thread_id, plan in plans.items()
        for ns, ids in plan.delete.items()
        for cid in sorted(ids)
    ]
    freed = [
        (thread_id, ns, channel, version)
        for thread_id, plan in plans.items()
        for ns, blobs in plan.freed_blobs.items()
        for channel, version in sorted(blobs)
    ]
    threads, namespaces, ids = _columns(doomed, 3)
    blob_threads, blob_namespaces, channels, versions = _columns(freed, 4)
    # One statement, so one transaction: a crash leaves the batch as it was or pruned, never half.
    async with pg_cursor(saver, binary=True) as cur:
        await cur.execute(
            _PG_PRUNE,
            {
                "batch": sorted(plans),
                "threads": threads,
                "namespaces": namespaces,
                "ids": ids,
                "blob_threads": blob_threads,
                "blob_namespaces": blob_namespaces,
                "channels": channels,
                "versions": versions,
            },
        )
    return len(doomed)


# -- Redis -------------------------------------------------------------------------------------


async def _read_redis(saver: Any, thread_ids: Sequence[str]) -> ThreadChains:
    from memory_tiers.working import redis_saver

    return {thread_id: await redis_saver.read_chain(saver, thread_id) for thread_id in thread_ids}


async def _prune_redis(saver: Any, plans: Mapping[str, PrunePlan]) -> int:
    from memory_tiers.working import redis_saver

    return await redis_saver.prune(saver, plans)


# -- dispatch ----------------------------------------------------------------------------------

_BACKENDS: dict[str, _Backend] = {
    "InMemorySaver": _Backend(_read_memory, _prune_memory),  # type: ignore[arg-type]
    "AsyncSqliteSaver": _Backend(_read_sqlite, _prune_sqlite),
    "AsyncPostgresSaver": _Backend(_read_postgres, _prune_postgres),
    "AsyncRedisSaver": _Backend(_read_redis, _prune_redis),
}


def _backend(saver: BaseCheckpointSaver[Any]) -> _Backend:
    for name, backend in _BACKENDS.items():
        if is_saver(saver, name):
            return backend
    raise UsageError(
        f"working.retention.keep_last cannot prune a {type(saver).__name__}: supported are "
        "InMemorySaver, AsyncSqliteSaver, AsyncPostgresSaver and AsyncRedisSaver"
    )


async def read_chains(saver: BaseCheckpointSaver[Any], thread_ids: Sequence[str]) -> ThreadChains:
    """Each thread's checkpoints as `CheckpointInfo` records, by namespace (``{}`` for a thread
    without checkpoints), read without their values or pending writes where the backend allows.

    Raises:
        UsageError: the checkpointer is not one memory_tiers can prune.
    """
    backend = _backend(saver)
    with translate_errors(TIER, type(saver).__name__):
        return await backend.read(saver, thread_ids)


async def prune_threads(saver: BaseCheckpointSaver[Any], plans: Mapping[str, PrunePlan]) -> int:
    """Delete what each thread's plan removes (thread id -> plan); returns the checkpoints removed.

    Raises:
        UsageError: the checkpointer is not one memory_tiers can prune.
    """
    if not plans:
        return 0
    backend = _backend(saver)
    with translate_errors(TIER, type(saver).__name__):
        return await backend.prune(saver, plans)
