"""The load node's two reads: run at once (the recall in the node's own task, the session read in
a second one), and when either fails the node fails, the session read's error first, as a
``gather`` of both would; the session read never outlives the node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from memory_tiers import MemoryManager
from memory_tiers.context import TurnIds
from memory_tiers.errors import OwnershipError
from memory_tiers.nodes import MemoryNodes

IDS = TurnIds("alice", "t1", "s1")


class Reads(MemoryNodes):
    def __init__(self, manager: MemoryManager, session: Any, recall: Any) -> None:
        super().__init__(manager)
        self.session_result, self.recall_result = session, recall
        self.session_done = asyncio.Event()
        self.overlapped = False

    async def _read_session(self, ids: TurnIds) -> tuple[dict[str, Any], bool]:
        try:
            await asyncio.sleep(0.01)
            if isinstance(self.session_result, BaseException):
                raise self.session_result
            return self.session_result
        finally:
            self.session_done.set()

    async def _recall(
        self, state: Any, ids: TurnIds, config: Any, query: str | None
    ) -> tuple[dict[str, Any], bool]:
        await asyncio.sleep(0)
        self.overlapped = not self.session_done.is_set()
        if isinstance(self.recall_result, BaseException):
            raise self.recall_result
        return self.recall_result


def _nodes(session: Any, recall: Any) -> Reads:
    return Reads(MemoryManager({"working": {"backend": "memory"}}), session, recall)


async def test_both_reads_run_at_once_and_merge():
    nodes = _nodes(({"session": {"a": 1}}, False), ({"profile": {}, "facts": [], "memory_version": 1}, True))
    update = await nodes._load({"messages": []}, IDS, {})
    assert update == {"session": {"a": 1}, "profile": {}, "facts": [], "memory_version": 1,
                      "memory_degraded": ["long_term"]}  # fmt: skip
    assert nodes.overlapped


@pytest.mark.parametrize(
    ("session", "recall", "raised"),
    [
        (OwnershipError("session"), ({}, False), "session"),
        (({}, False), OwnershipError("thread"), "thread"),
        (OwnershipError("session"), OwnershipError("thread"), "session"),
    ],
)
async def test_a_failed_read_fails_the_node_and_the_session_error_comes_first(session, recall, raised):
    nodes = _nodes(session, recall)
    with pytest.raises(OwnershipError, match=raised):
        await nodes._load({"messages": []}, IDS, {})
    assert nodes.session_done.is_set()  # not left running


async def test_cancelling_the_node_cancels_the_session_read():
    nodes = _nodes(({}, False), ({}, False))
    started = asyncio.Event()

    async def slow_recall(state: Any, ids: TurnIds, config: Any, query: str | None) -> Any:
        started.set()
        await asyncio.sleep(3600)

    nodes._recall = slow_recall  # type: ignore[method-assign]
    task = asyncio.ensure_future(nodes._load({"messages": []}, IDS, {}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert nodes.session_done.is_set()
