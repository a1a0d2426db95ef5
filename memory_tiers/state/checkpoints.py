"""Bringing a thread's checkpoint forward to the current state version.

The migration works on the checkpoint itself, not inside a node: a renamed or dropped key may
no longer be a channel of the new graph, so a node would never see it. The migrated state is
written as a new checkpoint, child of the old one (like ``graph.update_state``), in one
``put``: the thread either moves forward whole or stays exactly as it was, and the work is done
once per thread. The old checkpoint stays in the thread's history.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, copy_checkpoint
from langgraph.checkpoint.base.id import uuid6

from memory_tiers.state.migrators import StateMigrator

VERSION_KEY = "memory_version"
MIGRATION_METADATA_KEY = "memory_tiers_migration"


def is_state_key(channel: str) -> bool:
    """Whether a checkpoint channel is a state key (not LangGraph's own bookkeeping)."""
    return not channel.startswith("__") and ":" not in channel


def state_version(tup: CheckpointTuple, initial_version: int) -> int:
    """The state version a checkpoint holds (``initial_version`` when it records none)."""
    version = tup.checkpoint["channel_values"].get(VERSION_KEY)
    return version if isinstance(version, int) and not isinstance(version, bool) else initial_version


def upgrader(
    saver: BaseCheckpointSaver[Any], migrator: StateMigrator, current_version: int
) -> Callable[[RunnableConfig, CheckpointTuple], Awaitable[CheckpointTuple]]:
    """The checkpointer's load hook: a thread's latest checkpoint is brought forward when it is
    loaded; a checkpoint asked for by id (history, time travel) is returned as it is."""

    async def on_load(config: RunnableConfig, tup: CheckpointTuple) -> CheckpointTuple:
        if (config.get("configurable") or {}).get("checkpoint_id"):
            return tup
        if state_version(tup, migrator.initial_version) >= current_version:
            return tup
        return await upgrade_checkpoint(saver, tup, migrator, current_version)

    return on_load


def can_migrate(tup: CheckpointTuple) -> bool:
    """Root-graph checkpoints with no run in flight: pending writes belong to tasks whose ids
    derive from the checkpoint id, so moving them to a new checkpoint would orphan them. Such a
    thread is migrated at its first load after the run finishes."""
    configurable = tup.config.get("configurable") or {}
    return not configurable.get("checkpoint_ns") and not tup.pending_writes


@dataclass(frozen=True)
class Upgrade:
    """A migrated checkpoint ready to be written."""

    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    new_versions: dict[str, Any]
    from_version: int


async def plan_upgrade(
    saver: BaseCheckpointSaver[Any],
    tup: CheckpointTuple,
    migrator: StateMigrator,
    current_version: int,
) -> Upgrade | None:
    """Migrate the checkpoint's state in memory; None when it is already current.

    Raises:
        StateMigrationError: a step failed or the result did not validate.
    """
    from_version = state_version(tup, migrator.initial_version)
    if from_version >= current_version:
        return None
    values = tup.checkpoint["channel_values"]
    state = {key: value for key, value in values.items() if is_state_key(key)}
    # Steps may change nested values in place: they work on a copy, compared afterwards.
    working = copy.deepcopy(state)
    thread_id = (tup.config.get("configurable") or {}).get("thread_id")
    migrated = await migrator.migrate(working, from_version, current_version, subject=f"thread {thread_id!r}")
    migrated[VERSION_KEY] = current_version

    checkpoint = copy_checkpoint(tup.checkpoint)
    versions = dict(checkpoint["channel_versions"])
    changed = [key for key, value in migrated.items() if key not in state or state[key] != value]
    removed = [key for key in state if key not in migrated]
    # Like LangGraph's own writes: every new version is above every existing one.
    next_version = saver.get_next_version(max(versions.values(), default=None), None)
    new_versions = dict.fromkeys(changed, next_version)
    versions.update(new_versions)
    for key in removed:
        versions.pop(key, None)
    channel_values = {k: v for k, v in values.items() if not is_state_key(k)} | migrated
    step = int((tup.metadata or {}).get("step", -1)) + 1
    checkpoint.update(
        id=str(uuid6(clock_seq=step)),
        ts=datetime.now(UTC).isoformat(),
        channel_values=channel_values,
        channel_versions=versions,
        updated_channels=sorted(changed),
    )
    metadata = {
        **dict(tup.metadata or {}),
        "source": "update",
        "step": step,
        "parents": {},
        MIGRATION_METADATA_KEY: {"from": from_version, "to": current_version},
    }
    return Upgrade(checkpoint, metadata, new_versions, from_version)


async def upgrade_checkpoint(
    saver: BaseCheckpointSaver[Any],
    tup: CheckpointTuple,
    migrator: StateMigrator,
    current_version: int,
) -> CheckpointTuple:
    """Write the migrated checkpoint (if the thread is old) and return it as the latest."""
    if not can_migrate(tup):
        return tup
    upgrade = await plan_upgrade(saver, tup, migrator, current_version)
    if upgrade is None:
        return tup
    config = await saver.aput(tup.config, upgrade.checkpoint, upgrade.metadata, upgrade.new_versions)  # type: ignore[arg-type]
    return CheckpointTuple(
        config=config,
        checkpoint=upgrade.checkpoint,  # type: ignore[arg-type]
        metadata=upgrade.metadata,  # type: ignore[arg-type]
        parent_config=tup.config,
        pending_writes=[],
    )
