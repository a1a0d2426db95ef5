"""AsyncRedisSaver's documents read and deleted by search, for retention and ``users.forget``.

The saver's own ``alist``, ``aprune`` and ``adelete_thread`` read too much or too little for
them: ``alist`` deserializes every channel value and loads every pending write; ``aprune``
makes one search per checkpoint for its writes; ``adelete_thread`` takes at most 10,000
checkpoints and 10,000 writes a call. Here a thread's chain is one search of its checkpoint
documents (their values left as JSON), a plan's writes one search per hundred checkpoints, and
deleted threads a search of their writes and one of their checkpoints per hundred threads (a
second search fetches the rest when more than a thousand documents match); keys are the ones the
searches return or the saver's own methods build (the layout of the langgraph-checkpoint-redis
version this project pins). Channel values are inline in the checkpoint documents: deleting a
checkpoint deletes its values.

The saver's TAG fields fold case (RediSearch's default), so a search for thread ``T-1`` finds
the documents of thread ``t-1`` too, which may be another user's: every document a search
returns is kept only if its own ``thread_id`` is exactly one asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph.checkpoint.redis.util import from_storage_safe_id, from_storage_safe_str, to_storage_safe_id
from redisvl.query import CountQuery, FilterQuery
from redisvl.query.filter import FilterExpression, Tag

from memory_tiers.working.chain import SENDS_IN_CHECKPOINT, CheckpointInfo, PrunePlan, delta_channels

PAGE = 1000
"""Documents (checkpoints or pending writes) a first search returns; more come in a second."""
LISTING_CAP = 10_000
"""Checkpoints ``AsyncRedisSaver.alist`` returns when given no limit: its newest."""
IDS_PER_SEARCH = 100
"""Checkpoints whose pending writes, or threads whose documents, one search finds."""
_CHECKPOINT_FIELDS = [
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "$.checkpoint",
    "$.metadata",
]

InfoChains = dict[str, dict[str, CheckpointInfo]]  # namespace -> checkpoint id -> info


def _of_threads(thread_ids: Sequence[str]) -> FilterExpression:
    return Tag("thread_id") == [to_storage_safe_id(thread_id) for thread_id in thread_ids]


def _theirs(docs: list[Any], thread_ids: Sequence[str]) -> list[Any]:
    """The documents of exactly these threads (the search folded case; see the module doc)."""
    wanted = set(thread_ids)
    return [doc for doc in docs if from_storage_safe_id(doc.thread_id) in wanted]


async def _search_all(index: Any, query: FilterQuery) -> list[Any]:
    """Every document ``query`` finds: one search of a `PAGE`, and when more match, one more
    asking for all of them in one reply, so no offset can shift between pages when other
    documents come or go meanwhile (another thread's, say, that the search also matched)."""
    found = await index.search(query.paging(0, PAGE))
    if found.total > len(found.docs):
        found = await index.search(query.paging(0, found.total))
    return list(found.docs)


async def _delete(saver: Any, keys: Sequence[str]) -> None:
    """Delete ``keys``: one pipeline, or key by key on a Cluster (as the saver's methods do)."""
    if saver.cluster_mode:
        for key in keys:
            await saver._redis.delete(key)
    elif keys:
        pipeline = saver._redis.pipeline()
        for key in keys:
            pipeline.delete(key)
        await pipeline.execute()


async def listing_size(saver: Any, thread_id: str) -> int:
    """How many checkpoint documents a listing of the thread matches, a case sibling's with
    them: one count search."""
    return int(await saver.checkpoints_index.query(CountQuery(_of_threads([thread_id]))))


async def read_chain(saver: Any, thread_id: str) -> InfoChains:
    """The thread's checkpoints as `CheckpointInfo` records, by namespace (`_search_all`, sorted
    by id), channel values parsed as JSON only, no pending writes or sends loaded."""
    query = FilterQuery(
        filter_expression=_of_threads([thread_id]),
        return_fields=_CHECKPOINT_FIELDS,
        num_results=PAGE,
        sort_by=("checkpoint_id", "ASC"),
    )
    chains: InfoChains = {}
    for doc in _theirs(await _search_all(saver.checkpoints_index, query), [thread_id]):
        checkpoint = json.loads(doc["$.checkpoint"])
        metadata = getattr(doc, "$.metadata", None)
        info = CheckpointInfo(
            id=from_storage_safe_id(doc.checkpoint_id),
            parent=from_storage_safe_id(doc.parent_checkpoint_id) or None,
            format=int(checkpoint.get("v", SENDS_IN_CHECKPOINT)),
            channel_versions=dict(checkpoint.get("channel_versions") or {}),
            delta_channels=delta_channels(json.loads(metadata) if metadata else None),
            holds=frozenset(checkpoint.get("channel_values") or ()),
        )
        chains.setdefault(from_storage_safe_str(doc.checkpoint_ns), {})[info.id] = info
    return chains


async def prune(saver: Any, plans: Mapping[str, PrunePlan]) -> int:
    """Delete each plan's checkpoints with their pending writes and write registries (the plan's
    own checkpoints, not ``aprune(keep_last=N)``'s: that counts the newest N when it runs, so a
    turn written since the plan would push out a checkpoint the plan keeps). Returns how many
    checkpoints went."""
    keys: list[str] = []
    for thread_id, plan in plans.items():
        doomed = [(ns, cid) for ns, ids in plan.delete.items() for cid in sorted(ids)]
        for ns, cid in doomed:
            keys.append(saver._make_redis_checkpoint_key(thread_id, ns, cid))
            if saver._key_registry:
                keys.append(saver._key_registry.make_write_keys_zset_key(thread_id, ns, cid))
        ids = sorted({cid for _, cid in doomed})
        for start in range(0, len(ids), IDS_PER_SEARCH):
            keys += await _write_keys(saver, thread_id, ids[start : start + IDS_PER_SEARCH])
    await _delete(saver, keys)
    return sum(plan.checkpoints for plan in plans.values())


async def _write_keys(saver: Any, thread_id: str, checkpoint_ids: Sequence[str]) -> list[str]:
    """The keys of the pending writes of some of a thread's checkpoints: one search (``aprune``
    makes one per checkpoint; `_search_all`); complete, as only a thread's latest checkpoint gets new
    writes, and a plan keeps it."""
    query = FilterQuery(
        filter_expression=_of_threads([thread_id])
        & (Tag("checkpoint_id") == [to_storage_safe_id(cid) for cid in checkpoint_ids]),
        return_fields=["thread_id"],
        num_results=PAGE,
    )
    return [doc.id for doc in _theirs(await _search_all(saver.checkpoint_writes_index, query), [thread_id])]


async def delete_threads(saver: Any, thread_ids: Sequence[str]) -> None:
    """Delete every checkpoint, pending write, write registry and latest-checkpoint pointer of
    the threads, whatever their number (``adelete_thread`` takes 10,000 of each a call, and
    makes two searches and a pipeline per thread).

    A hundred threads at a time: their writes, then their checkpoints (so a run that stopped
    part way leaves checkpoints, which the next run finds), each read whole (`_search_all`)
    and deleted by the keys the searches return. A pass that also found documents of other
    threads (same ids but for case) is followed by another, until one finds only what it
    deletes: nothing of this batch's threads is left unless written meanwhile."""
    for start in range(0, len(thread_ids), IDS_PER_SEARCH):
        batch = thread_ids[start : start + IDS_PER_SEARCH]
        writes = FilterQuery(
            filter_expression=_of_threads(batch), return_fields=["thread_id"], num_results=PAGE
        )
        await _delete_found(saver, saver.checkpoint_writes_index, writes, batch, lambda doc: [doc.id])
        checkpoints = FilterQuery(
            filter_expression=_of_threads(batch),
            return_fields=["thread_id", "checkpoint_ns", "checkpoint_id"],
            num_results=PAGE,
        )
        await _delete_found(
            saver, saver.checkpoints_index, checkpoints, batch, lambda doc: _checkpoint_keys(saver, doc)
        )


def _checkpoint_keys(saver: Any, doc: Any) -> list[str]:
    """A checkpoint document's key, its write registry and its namespace's latest pointer."""
    thread_id = from_storage_safe_id(doc.thread_id)
    ns, cid = from_storage_safe_str(doc.checkpoint_ns), from_storage_safe_id(doc.checkpoint_id)
    keys = [doc.id, saver._make_redis_checkpoint_latest_key(thread_id, ns)]
    if saver._key_registry:
        keys.append(saver._key_registry.make_write_keys_zset_key(thread_id, ns, cid))
    return keys


async def _delete_found(
    saver: Any,
    index: Any,
    query: FilterQuery,
    thread_ids: Sequence[str],
    keys_of: Callable[[Any], list[str]],
) -> None:
    while True:
        found = await _search_all(index, query)
        doomed = _theirs(found, thread_ids)
        await _delete(saver, list(dict.fromkeys(key for doc in doomed for key in keys_of(doc))))
        if not doomed or len(doomed) == len(found):
            return
