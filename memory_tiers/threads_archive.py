"""Archiving a thread: its summary and facts into long-term memory, then its checkpoints gone.

The steps are ordered so that a crash at any point loses nothing and a rerun finishes the job:

1. the registry marks the thread ``archiving`` (retention also re-checks, in that same UPDATE,
   that the thread is still idle);
2. facts are extracted from the messages no earlier turn learned from, and stored with an
   observation key of the archive, so a rerun adds nothing;
3. the summary is stored under an id derived from the thread and its last checkpoint, so a
   rerun writes no second one;
4. the checkpoints are deleted, and the thread is marked ``archived``.

If the extractors or the summarizer raise (steps 2 and 3), nothing has been deleted: the thread
goes back to ``active`` rather than staying ``archiving`` while it is still in use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from langgraph.checkpoint.base import CheckpointTuple

from memory_tiers.context import TurnIds
from memory_tiers.errors import UsageError
from memory_tiers.learning import Turn
from memory_tiers.long_term.consolidate import Provenance
from memory_tiers.long_term.models import ThreadRecord
from memory_tiers.summarizers import SummaryContext, run_summarizer
from memory_tiers.working.chain import ROOT_NS, checkpoint_id, thread_config
from memory_tiers.working.state import thread_messages
from memory_tiers.working.thread_data import delete_checkpoints

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

_ARCHIVE_IDS = uuid.UUID("6f1c2d0e-5b7a-4e51-9a43-2f8e7c1d9b20")  # namespace of archive ids


@dataclass(frozen=True)
class ArchiveResult:
    """What archiving a thread did.

    Attributes:
        thread_id: the thread.
        archive_id: the long-term archive row holding its summary (None if the thread had no
            checkpoints to summarize).
        summary: the summary text.
        facts: facts stored from the thread's messages.
        checkpoints_deleted: whether checkpoints were deleted by this call.
    """

    thread_id: str
    archive_id: str | None
    summary: str
    facts: int
    checkpoints_deleted: bool


def archive_id_for(thread_id: str, head: str) -> str:
    """The archive row id of a thread summarized at checkpoint ``head`` (stable across reruns)."""
    return str(uuid.uuid5(_ARCHIVE_IDS, f"thread:{thread_id}:{head}"))


async def archive_thread(
    manager: MemoryManager, record: ThreadRecord, *, idle_before: datetime | None = None
) -> ArchiveResult | None:
    """Archive an owner-checked thread (see the module docstring for the order of steps).

    Args:
        idle_before: only if the thread has not been active since (retention); when it has,
            nothing is done and None is returned.

    Raises:
        UsageError: the thread is being forked.
    """
    registry = manager.long_term.registry
    thread_id = record.thread_id
    if record.status == "forking":
        raise UsageError(f"thread {thread_id!r} is still being forked; fork it again to finish first")
    if record.status != "archived":
        moved = await registry.set_status(
            thread_id, "archiving", expected=["active", "archiving"], idle_before=idle_before
        )
        if not moved:
            return None
    saver = manager.checkpointer.inner
    head = await saver.aget_tuple(thread_config(thread_id, ROOT_NS))
    result = ArchiveResult(thread_id, None, "", 0, checkpoints_deleted=False)
    if head is not None:
        result = await _summarize_and_drop(manager, record, head)
    await registry.set_status(thread_id, "archived", expected=["archiving"], archived_at=datetime.now(UTC))
    manager.metrics.add("threads_archived")
    return result


async def _summarize_and_drop(
    manager: MemoryManager, record: ThreadRecord, head: CheckpointTuple
) -> ArchiveResult:
    long_term = manager.long_term
    saver = manager.checkpointer.inner
    user_id, thread_id = record.user_id, record.thread_id
    head_id = checkpoint_id(head)
    messages = await thread_messages(saver, head)
    facts = 0
    try:
        if manager.config.working.archive.extract_facts and messages:
            learned = await long_term.observed_message_ids(user_id, thread_id)
            turn = Turn(
                ids=TurnIds(user_id, thread_id, record.session_id),
                provenance=Provenance(thread_id, head_id, key=f"archive:{thread_id}"),
                messages=[m for m in messages if m.id is None or m.id not in learned],
            )
            candidates, _problems = await manager.learner.extract(turn)
            facts = len((await long_term.save_turn(user_id, turn.provenance, candidates)).fact_ids)
        summary = await run_summarizer(
            manager.summarizer, messages, SummaryContext(user_id=user_id, thread_id=thread_id)
        )
    except Exception:
        # Nothing is deleted before the summary is stored, so the thread is whole: back to
        # active, where it is listed, pruned and archived again like any other (facts already
        # stored are keyed by the archive, so the next attempt adds none twice).
        await manager.long_term.registry.set_status(thread_id, "active", expected=["archiving"])
        raise
    archive_id = await long_term.add_archive(
        user_id,
        kind="thread",
        summary=summary.text,
        data={
            "topics": summary.topics,
            "message_count": summary.message_count,
            "last_checkpoint_id": head_id,
            "namespace": record.namespace,
            "metadata": record.metadata,
        },
        thread_id=thread_id,
        archive_id=archive_id_for(thread_id, head_id),
    )
    await delete_checkpoints(manager.checkpointer, thread_id)
    return ArchiveResult(thread_id, archive_id, summary.text, facts, checkpoints_deleted=True)
