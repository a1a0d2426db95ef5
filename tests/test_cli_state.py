"""``memory-tiers state migrate``: the bulk migration from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import turn_config
from langchain_core.messages import AIMessage

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.cli import main

MIGRATIONS = """
def split_name(state):
    full = state.pop("name", "")
    if full == "Bad":
        raise ValueError("cannot split a single word")
    first, _, last = full.partition(" ")
    return {**state, "first_name": first, "last_name": last}

migrators = {1: split_name, 2: lambda state: {**state, "greeting": "Hello"}}
"""


class StateV1(MemoryState, total=False):
    name: str


async def write_v1_thread(data_dir: Path, thread: str, name: str) -> None:
    async with MemoryManager({"data_dir": str(data_dir)}) as v1:
        graph = v1.nodes.around(lambda s: {"messages": [AIMessage("hi")], "name": name}, StateV1)
        await graph.compile(checkpointer=v1.checkpointer).ainvoke(
            {"messages": [("user", "hello")]}, turn_config("alice", thread)
        )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "app_migrations.py").write_text(MIGRATIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "memory_tiers.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nstate: {{version: 3, migrators: 'app_migrations:migrators'}}\n"
    )
    return config


def test_state_migrate_dry_run_then_for_real(project: Path) -> None:
    for thread, name in [("t1", "Ada Lovelace"), ("t2", "Alan Turing")]:
        asyncio.run(write_v1_thread(project.parent / "data", thread, name))
    runner = CliRunner()

    dry = runner.invoke(main, ["state", "migrate", "--config", str(project), "--dry-run"])
    real = runner.invoke(main, ["state", "migrate", "--config", str(project)])
    again = runner.invoke(main, ["state", "migrate", "--config", str(project)])

    assert dry.exit_code == 0, dry.output
    assert "would migrate 2 thread(s) to version 3" in dry.output
    assert real.exit_code == 0, real.output
    assert "migrated 2 thread(s) to version 3" in real.output
    assert "threads per schema version" in real.output and "3 (current)" in real.output
    assert "migrated 0 profile(s) to version 1" in real.output
    assert "migrated 0 thread(s)" in again.output


def test_state_migrate_lists_failures_and_exits_1(project: Path) -> None:
    asyncio.run(write_v1_thread(project.parent / "data", "good", "Ada Lovelace"))
    asyncio.run(write_v1_thread(project.parent / "data", "bad", "Bad"))

    result = CliRunner().invoke(main, ["state", "migrate", "--config", str(project)])

    assert result.exit_code == 1
    assert "migrated 1 thread(s)" in result.output
    assert "failed (left unchanged)" in result.output and "cannot split a single word" in result.output


def test_state_migrate_reports_a_broken_chain_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "memory_tiers.yaml"
    config.write_text(f"data_dir: {tmp_path}\nstate: {{version: 2}}\n")

    result = CliRunner().invoke(main, ["state", "migrate", "--config", str(config)])

    assert result.exit_code == 2
    assert "state: no step for 1 -> 2" in result.output


def test_state_migrate_brings_profiles_forward_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "profile_steps.py").write_text(
        "profile_migrators = {1: lambda doc: {'display_name': doc.pop('name', ''), **doc}}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data_dir = tmp_path / "data"

    async def write_v1_profile() -> None:
        async with MemoryManager({"data_dir": str(data_dir)}) as v1:
            await v1.long_term.patch_profile("alice", {"name": "Ada"})

    asyncio.run(write_v1_profile())
    config = tmp_path / "memory_tiers.yaml"
    config.write_text(
        f"data_dir: {data_dir}\n"
        "long_term: {profile: {version: 2, migrators: 'profile_steps:profile_migrators'}}\n"
    )

    result = CliRunner().invoke(main, ["state", "migrate", "--config", str(config)])

    async def read_profile() -> dict:
        async with MemoryManager(
            {
                "data_dir": str(data_dir),
                "long_term": {"profile": {"version": 2, "migrators": "profile_steps:profile_migrators"}},
            }
        ) as v2:
            return (await v2.long_term.get_profile("alice")).document

    assert result.exit_code == 0, result.output
    assert "migrated 1 profile(s) to version 2" in result.output
    assert asyncio.run(read_profile()) == {"display_name": "Ada"}
