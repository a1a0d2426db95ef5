"""Bringing a thread's checkpoint forward to the current state version.

The migration works on the checkpoint itself, not inside a node: a renamed or dropped key may
no longer be a channel of the new graph, so a node would never see it. The latest checkpoint is
rewritten in place (same id, same parent, new channel versions for what changed) in one
``put``: the thread either moves forward whole or stays exactly as it was, pending writes
(an interrupt waiting for its answer, a failed task) stay attached to it, a turn written
meanwhile stays newer, and two workers migrating at once write the same thing.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, copy_checkpoint

from memory_tiers.context import RUNTIME_KEY
from memory_tiers.errors import StateSchemaError
from memory_tiers.state.migrators import StateMigrator

VERSION_KEY = "memory_version"
MIGRATION_METADATA_KEY = "memory_tiers_migration"
# Every checkpoint manager.checkpointer writes records the state version of the code writing it.
WRITER_VERSION_KEY = "memory_tiers_state_version"


def is_state_key(channel: str) -> bool:
    """Whether a checkpoint channel is a state key (not LangGraph's own bookkeeping)."""
    return not channel.startswith("__") and ":" not in channel


def state_version(tup: CheckpointTuple, initial_version: int) -> int:
    """The state version a checkpoint holds: its ``memory_version``, else the version the code
    that wrote it stamped in its metadata, else ``initial_version`` (written before memory_tiers)."""
    for version in (
        tup.checkpoint["channel_values"].get(VERSION_KEY),
        (tup.metadata or {}).get(WRITER_VERSION_KEY),
    ):
        if isinstance(version, int) and not isinstance(version, bool):
            return version
    return initial_version


def check_not_newer(tup: CheckpointTuple, migrator: StateMigrator, current_version: int) -> None:
    """Refuse a thread written by newer code: this code would drop the keys it does not know."""
    version = state_version(tup, migrator.initial_version)
    if version > current_version:
        thread_id = (tup.config.get("configurable") or {}).get("thread_id")
        raise StateSchemaError(
            f"thread {thread_id!r} is at state version {version}, newer than this code's "
            f"{current_version}: deploy the newer code (state versions only move forward)"
        )


def upgrader(
    saver: BaseCheckpointSaver[Any], migrator: StateMigrator, current_version: int
) -> Callable[[RunnableConfig, CheckpointTuple], Awaitable[CheckpointTuple]]:
    """The checkpointer's load hook: a thread's latest checkpoint is brought forward when it is
    loaded; a checkpoint asked for by id (history, time travel) is returned as it is."""

    async def on_load(config: RunnableConfig, tup: CheckpointTuple) -> CheckpointTuple:
        configurable = config.get("configurable") or {}
        if configurable.get("checkpoint_id") or not can_migrate(tup):
            refuse_running_from_old(configurable, tup, migrator, current_version)
            return tup
        check_not_newer(tup, migrator, current_version)
        if state_version(tup, migrator.initial_version) == current_version:
            return tup
        return await upgrade_checkpoint(saver, tup, migrator, current_version)

    return on_load


def refuse_running_from_old(
    configurable: Mapping[str, Any], tup: CheckpointTuple, migrator: StateMigrator, current_version: int
) -> None:
    """A checkpoint asked for by id is shown as it was; but a graph run starting from an older
    one (time travel past a migration) would lose what the new graph cannot see: refuse it."""
    in_run = RUNTIME_KEY in configurable
    if in_run and can_migrate(tup) and state_version(tup, migrator.initial_version) != current_version:
        thread_id = configurable.get("thread_id")
        raise StateSchemaError(
            f"thread {thread_id!r}: checkpoint {tup.checkpoint['id']!r} is at state version "
            f"{state_version(tup, migrator.initial_version)}, not {current_version}; runs can start "
            "only from checkpoints at the current version (the latest is migrated when loaded)"
        )


def can_migrate(tup: CheckpointTuple) -> bool:
    """Root-graph checkpoints; a subgraph's own checkpoints keep their shape (see the docs)."""
    return not (tup.config.get("configurable") or {}).get("checkpoint_ns")


@dataclass(frozen=True)
class Upgrade:
    """A migrated checkpoint ready to be written."""

    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    new_versions: dict[str, Any]


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
    # Same id and timestamp: the checkpoint is rewritten in place. updated_channels is kept as
    # it was, because LangGraph reads from it which nodes run next.
    checkpoint.update(channel_values=channel_values, channel_versions=versions)
    metadata = {
        **dict(tup.metadata or {}),
        WRITER_VERSION_KEY: current_version,
        MIGRATION_METADATA_KEY: {"from": from_version, "to": current_version},
    }
    return Upgrade(checkpoint, metadata, new_versions)


async def upgrade_checkpoint(
    saver: BaseCheckpointSaver[Any],
    tup: CheckpointTuple,
    migrator: StateMigrator,
    current_version: int,
) -> CheckpointTuple:
    """Rewrite the checkpoint migrated (if the thread is old) and return it."""
    if not can_migrate(tup):
        return tup
    upgrade = await plan_upgrade(saver, tup, migrator, current_version)
    if upgrade is None:
        return tup
    # put() records the config's checkpoint as the parent: give it the original parent.
    configurable = dict(tup.config["configurable"])
    configurable.pop("checkpoint_id", None)
    if tup.parent_config is not None:
        configurable["checkpoint_id"] = tup.parent_config["configurable"]["checkpoint_id"]
    await saver.aput(
        {"configurable": configurable}, upgrade.checkpoint, upgrade.metadata, upgrade.new_versions
    )  # type: ignore[arg-type]
    return CheckpointTuple(
        config=tup.config,
        checkpoint=upgrade.checkpoint,  # type: ignore[arg-type]
        metadata=upgrade.metadata,  # type: ignore[arg-type]
        parent_config=tup.parent_config,
        pending_writes=tup.pending_writes,
    )
