"""A thread's checkpoints as chains: what a kept checkpoint still needs, and copying a chain.

Backend-neutral: everything here goes through LangGraph's `BaseCheckpointSaver` API, so it is
the same on every checkpointer. Two things make a checkpoint depend on its ancestors:

* LangGraph's delta channels (``DeltaChannel``) store only a sentinel at most steps; a
  checkpoint's value is rebuilt from the ancestors' writes back to the nearest one holding a
  snapshot (`BaseCheckpointSaver.get_delta_channel_history`). Which channels are delta channels
  is in the checkpoint's metadata (``counters_since_delta_snapshot``), as LangGraph's own
  PostgreSQL saver reads it.
* Checkpoints older than format 4 keep their pending sends in the parent's writes.

Pending interrupts and resumes are writes of the checkpoint itself, so they go where it goes.

Planning a prune needs none of a checkpoint's values: `plan_prune` reads `CheckpointInfo`
records, which each backend's reader (`memory_tiers.working.pruning`) builds from what it
stores without deserializing channel values or pending writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

ROOT_NS = ""
DELTA_COUNTERS = "counters_since_delta_snapshot"
SENDS_IN_CHECKPOINT = 4  # checkpoint format from which pending sends live in the checkpoint

Chain = dict[str, CheckpointTuple]  # checkpoint id -> tuple, one namespace of one thread


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What planning a prune needs of one checkpoint: no channel values, no pending writes.

    Attributes:
        id: the checkpoint id.
        parent: the parent's id, or None for the first checkpoint.
        format: the checkpoint format version (``checkpoint["v"]``).
        channel_versions: channel -> version, as stored.
        delta_channels: the delta channels of its metadata (``counters_since_delta_snapshot``).
        holds: channels holding a value (a snapshot) at this checkpoint; readers may list only
            the thread's delta channels, the only ones asked about.
        inline: channels whose value at their version is stored inside the checkpoint, so no
            blob of theirs at that version exists (PostgreSQL; empty where unknown).
    """

    id: str
    parent: str | None
    format: int
    channel_versions: Mapping[str, Any]
    delta_channels: frozenset[str]
    holds: frozenset[str]
    inline: frozenset[str] = frozenset()


InfoChain = Mapping[str, CheckpointInfo]  # checkpoint id -> info, one namespace of one thread


def delta_channels(metadata: Mapping[str, Any] | None) -> frozenset[str]:
    """The delta channels a checkpoint's metadata names."""
    counters = (metadata or {}).get(DELTA_COUNTERS) or {}
    return frozenset(counters) if isinstance(counters, Mapping) else frozenset()


def checkpoint_info(tup: CheckpointTuple) -> CheckpointInfo:
    """The planning record of a full checkpoint tuple (for savers with no cheaper reader)."""
    return CheckpointInfo(
        id=checkpoint_id(tup),
        parent=parent_id(tup),
        format=int(tup.checkpoint.get("v", SENDS_IN_CHECKPOINT)),
        channel_versions=dict(tup.checkpoint["channel_versions"]),
        delta_channels=delta_channels(tup.metadata),
        holds=frozenset(tup.checkpoint["channel_values"]),
    )


def is_saver(saver: BaseCheckpointSaver[Any], class_name: str) -> bool:
    """Whether ``saver`` is (a subclass of) the LangGraph saver named ``class_name``; by name, so
    optional backends are not imported to ask."""
    return any(cls.__name__ == class_name for cls in type(saver).__mro__)


def checkpoint_id(tup: CheckpointTuple) -> str:
    """The id of a checkpoint tuple."""
    return str(tup.config["configurable"]["checkpoint_id"])


def parent_id(tup: CheckpointTuple) -> str | None:
    """The id of the checkpoint's parent, or None for the first one."""
    if tup.parent_config is None:
        return None
    return tup.parent_config["configurable"].get("checkpoint_id")


def thread_config(thread_id: str, ns: str = ROOT_NS, checkpoint: str | None = None) -> RunnableConfig:
    """The config that addresses a thread (and a namespace and checkpoint of it)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint is not None:
        configurable["checkpoint_id"] = checkpoint
    return {"configurable": configurable}


def of_thread(tup: CheckpointTuple, thread_id: Any) -> bool:
    """Whether a listed checkpoint is of exactly thread ``thread_id``. AsyncRedisSaver lists by
    a RediSearch TAG field, which folds case: a listing of ``T-1`` brings thread ``t-1``'s
    checkpoints too, which may be another user's."""
    # As text: AsyncSqliteSaver lists a thread named by a number by its text id, and still does.
    return str(tup.config["configurable"].get("thread_id")) == str(thread_id)


async def list_thread(
    saver: BaseCheckpointSaver[Any],
    config: RunnableConfig,
    *,
    filter: dict[str, Any] | None = None,
    before: RunnableConfig | None = None,
    limit: int | None = None,
    keep: Callable[[CheckpointTuple], bool] | None = None,
) -> AsyncIterator[CheckpointTuple]:
    """``saver.alist`` of the thread ``config`` names, holding only that thread's checkpoints
    (`of_thread`) and, with ``keep``, only those it keeps, newest first (``limit`` counts the
    kept ones).

    AsyncRedisSaver's listing may hold other threads' checkpoints too, and without a limit it
    stops at its newest 10,000. There a ``limit`` is asked of the saver first, then four times
    as many, and so on, until the thread's own fill it or the listing ends; no limit asks for as
    many as the thread's documents counted first (`redis_saver.listing_size`). A longer listing
    picks up below the oldest checkpoint already yielded, so one written meanwhile is neither
    yielded twice nor out of order."""
    thread_id = config["configurable"]["thread_id"]
    redis = is_saver(saver, "AsyncRedisSaver")
    asked = limit
    if redis and not limit:
        from memory_tiers.working import redis_saver

        asked = max(await redis_saver.listing_size(saver, str(thread_id)) + 1, redis_saver.LISTING_CAP)
    yielded: set[tuple[str, str]] = set()
    oldest: str | None = None  # the oldest checkpoint yielded; set once a first listing is done
    while True:
        listed, last = 0, None
        listing = saver.alist(config, filter=filter, before=before, limit=asked)
        try:
            async for tup in listing:
                listed += 1
                cid = checkpoint_id(tup)
                key = (tup.config["configurable"].get("checkpoint_ns") or ROOT_NS, cid)
                if not of_thread(tup, thread_id) or key in yielded or (oldest is not None and cid > oldest):
                    continue
                if keep is not None and not keep(tup):
                    continue
                yielded.add(key)
                last = cid
                yield tup
                if limit and len(yielded) >= limit:  # a limit of 0 is none, as the savers read it
                    return
        finally:
            # Stopping early must not leave the saver's listing (and its connection) open.
            close = getattr(listing, "aclose", None)
            if close is not None:
                await close()
        if not asked or listed < asked or not redis:
            return
        # Redis lists every namespace by id, newest first: the next listing resumes below this one.
        oldest = last if last is not None else oldest
        asked *= 4


async def load_thread(saver: BaseCheckpointSaver[Any], thread_id: str) -> dict[str, Chain]:
    """Every checkpoint of a thread, by namespace (the root graph's is ``""``)."""
    by_ns: dict[str, Chain] = defaultdict(dict)
    async for tup in list_thread(saver, {"configurable": {"thread_id": thread_id}}):
        ns = tup.config["configurable"].get("checkpoint_ns", ROOT_NS) or ROOT_NS
        by_ns[ns][checkpoint_id(tup)] = tup
    return dict(by_ns)


async def root_history(
    saver: BaseCheckpointSaver[Any], thread_id: str, *, before: str | None = None, limit: int | None = None
) -> AsyncIterator[CheckpointTuple]:
    """The root graph's checkpoints of a thread, newest first: those older than ``before``, at
    most ``limit``; the same on every saver. (AsyncRedisSaver's ``alist`` ignores ``before``
    unless the id is a ULID, LangGraph's are UUIDs, and takes namespace "" to mean every
    namespace: `list_thread` keeps what the listing should have held, and asks for more while
    the rest fill the ``limit``.)"""

    if limit is not None and limit < 1:
        return

    def wanted(tup: CheckpointTuple) -> bool:
        ns = tup.config["configurable"].get("checkpoint_ns") or ROOT_NS
        return ns == ROOT_NS and (before is None or checkpoint_id(tup) < before)

    before_config = None if before is None else thread_config(thread_id, ROOT_NS, before)
    listed = list_thread(
        saver, thread_config(thread_id, ROOT_NS), before=before_config, limit=limit, keep=wanted
    )
    try:
        async for tup in listed:
            yield tup
    finally:
        await listed.aclose()


def with_dependencies(chain: InfoChain, keep: Iterable[str]) -> set[str]:
    """``keep`` plus every ancestor a kept checkpoint needs to load with the same state.

    For each delta channel a kept checkpoint does not hold a snapshot of, its ancestors are
    kept back to the nearest one that holds a value for it; a checkpoint of an old format keeps
    its parent (its pending sends are there). Ancestors kept this way are checked in turn.
    """
    kept: set[str] = set()
    todo = [cid for cid in keep if cid in chain]
    while todo:
        cid = todo.pop()
        if cid in kept:
            continue
        kept.add(cid)
        info = chain[cid]
        if info.format < SENDS_IN_CHECKPOINT and info.parent is not None and info.parent in chain:
            todo.append(info.parent)
        missing = set(info.delta_channels - info.holds)
        cursor = info.parent
        while missing and cursor is not None and cursor in chain:
            ancestor = chain[cursor]
            todo.append(cursor)
            missing -= ancestor.holds
            cursor = ancestor.parent
    return kept


@dataclass
class PrunePlan:
    """What pruning one thread removes: per namespace, the checkpoints and the channel blobs
    (channel, version) that only they referenced."""

    delete: dict[str, set[str]] = field(default_factory=dict)
    freed_blobs: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    @property
    def checkpoints(self) -> int:
        """How many checkpoints the plan removes."""
        return sum(len(ids) for ids in self.delete.values())


def plan_prune(by_ns: Mapping[str, InfoChain], keep_last: int) -> PrunePlan:
    """Keep the newest ``keep_last`` checkpoints of each namespace and what they depend on."""
    plan = PrunePlan()
    for ns, chain in by_ns.items():
        kept = with_dependencies(chain, sorted(chain, reverse=True)[:keep_last])
        doomed = set(chain) - kept
        if not doomed:
            continue
        plan.delete[ns] = doomed
        referenced = _blobs(chain, kept, with_inline=True)
        plan.freed_blobs[ns] = _blobs(chain, doomed, with_inline=False) - referenced
    return plan


def _blobs(chain: InfoChain, ids: Iterable[str], *, with_inline: bool) -> set[tuple[str, str]]:
    return {
        (channel, str(version))
        for cid in ids
        for channel, version in chain[cid].channel_versions.items()
        if with_inline or channel not in chain[cid].inline
    }


def ancestors(chain: Chain, head: str) -> list[CheckpointTuple]:
    """``head`` and its ancestors (the parent links, not other branches), oldest first."""
    path: list[CheckpointTuple] = []
    cursor: str | None = head
    while cursor is not None and cursor in chain:
        path.append(chain[cursor])
        cursor = parent_id(chain[cursor])
    return path[::-1]


def _writes_by_task(tup: CheckpointTuple) -> list[tuple[str, list[tuple[str, Any]]]]:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in tup.pending_writes or ():
        groups.setdefault(task_id, []).append((channel, value))
    return list(groups.items())


async def copy_checkpoint(
    saver: BaseCheckpointSaver[Any], tup: CheckpointTuple, target: str, ns: str
) -> None:
    """Write one checkpoint, with its pending writes, into thread ``target`` (same ids).

    The writes go first, so a copy interrupted in between never shows a checkpoint without
    its interrupts. Tuples carry writes in replay order but not their task paths, so each
    task's writes get a path that sorts in that same order.
    """
    cid = checkpoint_id(tup)
    for position, (task_id, writes) in enumerate(_writes_by_task(tup)):
        await saver.aput_writes(thread_config(target, ns, cid), writes, task_id, f"{position:08d}")
    await saver.aput(
        thread_config(target, ns, parent_id(tup)),
        tup.checkpoint,
        tup.metadata,
        dict(tup.checkpoint["channel_versions"]),
    )


async def copy_chain(
    saver: BaseCheckpointSaver[Any], by_ns: Mapping[str, Chain], head: str, target: str
) -> int:
    """Copy the root chain up to ``head`` (and the subgraph checkpoints written before the root
    graph's next checkpoint after it) into ``target``.

    Subgraphs run inside the step that follows a root checkpoint, so their checkpoints are newer
    than it: a subgraph interrupted at ``head`` has its progress after ``head``, and it is copied.
    The root graph's checkpoints go last, oldest first, so the target's latest checkpoint is
    ``head`` only once everything it needs is there. Returns the checkpoints copied.
    """
    root = by_ns.get(ROOT_NS, {})
    bound = min((c for c in root if c > head), default=None)
    copied = 0
    for ns, chain in sorted(by_ns.items()):
        if ns == ROOT_NS:
            continue
        for cid in sorted(c for c in chain if bound is None or c < bound):
            await copy_checkpoint(saver, chain[cid], target, ns)
            copied += 1
    for tup in ancestors(root, head):
        await copy_checkpoint(saver, tup, target, ROOT_NS)
        copied += 1
    return copied
