"""``memory-tiers threads|sessions|retention|users``: tables and --json, confirmations, owner checks.

Data is written through the library, then read and changed through the command (CliRunner, in
process), on the embedded backends and on PostgreSQL + Redis. The CLI runs ``asyncio.run``
itself, so these are plain sync tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from click.testing import CliRunner, Result
from helpers import memory_graph, turn_config, unique

from memory_tiers import MemoryManager
from memory_tiers.cli import main

T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "memory_tiers.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def cli(config: Path, *args: str, input: str | None = None) -> Result:
    """Run ``memory-tiers ARGS --config CONFIG`` on a wide terminal, so table cells do not fold."""
    return CliRunner().invoke(main, [*args, "--config", str(config)], input=input, env={"COLUMNS": "250"})


def cli_json(config: Path, *args: str) -> Any:
    """The command's stdout, which must be JSON and nothing else."""
    result = cli(config, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_refused(result: Result) -> None:
    """The confirmation was answered No (or not at all): exit 1, aborted, nothing done."""
    assert result.exit_code == 1, result.output
    assert "[y/N]" in result.stderr and "Aborted" in result.stderr


def assert_clean_error(result: Result, *needles: str) -> None:
    """Exit code 2 with a one-line message on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr


def with_manager(config: dict[str, Any], operation: Callable[[MemoryManager], Awaitable[T]]) -> T:
    async def run() -> T:
        async with MemoryManager(config) as manager:
            return await operation(manager)

    return asyncio.run(run())


def run_turns(config: dict[str, Any], user: str, thread: str, messages: list[str]) -> None:
    async def turns(manager: MemoryManager) -> None:
        graph = memory_graph(manager)
        for text in messages:
            await graph.ainvoke({"messages": [("user", text)]}, turn_config(user, thread))

    with_manager(config, turns)


def thread_status(config: dict[str, Any], user: str, thread: str) -> tuple[str | None, int]:
    """The thread's registry status (None if it has no row) and its checkpoint count."""

    async def read(manager: MemoryManager) -> tuple[str | None, int]:
        page = await manager.threads.list(user, limit=1000)
        record = next((t for t in page.threads if t.thread_id == thread), None)
        if record is None:
            return None, 0
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        checkpoints = [c async for c in manager.checkpointer.inner.alist(config)]
        return record.status, len(checkpoints)

    return with_manager(config, read)


@pytest.fixture
def fresh_config(request: pytest.FixtureRequest, memory_config: dict[str, Any]) -> dict[str, Any]:
    """``memory_config``, but on PostgreSQL in a database of the test's own: retention acts on
    every thread it finds, so it must not meet other tests' threads."""
    if "long_term" not in memory_config:
        return memory_config
    database = request.getfixturevalue("fresh_postgres_url")
    return {
        **memory_config,
        "working": {"backend": "postgres", "url": database},
        "long_term": {"url": database},
    }


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str, redis_prefix: str) -> dict[str, Any]:
    """Embedded long-term and working tiers, sessions in the real Redis (a unique prefix): the
    embedded session tier is in-process, so no session outlives one command there."""
    return {"data_dir": str(tmp_path / "data"), "session": {"url": redis_url, "key_prefix": redis_prefix}}


# -- threads ---------------------------------------------------------------------------


def test_threads_list_show_and_history_as_tables_and_json(memory_config, tmp_path):
    alice, bob = unique("alice"), unique("bob")
    thread, other = unique("t"), unique("t")
    run_turns(memory_config, alice, thread, ["hello there", "I like [bold]green tea[/bold]"])
    run_turns(memory_config, bob, other, ["hi"])
    config = write_config(tmp_path, memory_config)

    listed = cli(config, "threads", "list", "--user", alice)
    page = cli_json(config, "threads", "list", "--user", alice)
    shown = cli(config, "threads", "show", "--user", alice, "--thread", thread)
    state = cli_json(config, "threads", "show", "--user", alice, "--thread", thread)
    history = cli_json(config, "threads", "history", "--user", alice, "--thread", thread, "--limit", "100")
    oldest = history["checkpoints"][-1]["checkpoint_id"]
    table = cli(config, "threads", "history", "--user", alice, "--thread", thread, "--limit", "100")
    at_start = cli_json(
        config, "threads", "show", "--user", alice, "--thread", thread, "--checkpoint", oldest
    )

    assert listed.exit_code == 0, listed.output
    assert f"threads of {alice}" in listed.stdout and thread in listed.stdout and "active" in listed.stdout
    assert other not in listed.stdout
    assert [t["thread_id"] for t in page["threads"]] == [thread]
    assert page["threads"][0]["user_id"] == alice and page["next_cursor"] is None
    assert shown.exit_code == 0, shown.output
    assert "4 message(s)" in shown.stdout and "Hello stranger" in shown.stdout
    assert "[bold]green tea[/bold]" in shown.stdout  # user text is shown as it is, not as markup
    assert state["thread"]["thread_id"] == thread and state["thread"]["status"] == "active"
    contents = [m["data"]["content"] for m in state["state"]["messages"]]
    assert contents == ["hello there", "Hello stranger", "I like [bold]green tea[/bold]", "Hello stranger"]
    assert len(history["checkpoints"]) > 2 and history["thread_id"] == thread
    assert {"checkpoint_id", "parent_checkpoint_id", "created_at", "step", "source"} <= set(
        history["checkpoints"][0]
    )
    assert all(c["checkpoint_id"] in table.stdout for c in history["checkpoints"])
    assert at_start["state"].get("messages", []) == []  # the first checkpoint: before any input


def test_threads_list_filters_and_pages(memory_config, tmp_path):
    alice = unique("alice")

    async def create(manager: MemoryManager) -> None:
        for i in range(3):
            await manager.threads.create(alice, f"{alice}-{i}", namespace="support", metadata={"n": i})
        await manager.threads.create(alice, f"{alice}-sales", namespace="sales")

    with_manager(memory_config, create)
    config = write_config(tmp_path, memory_config)

    first = cli_json(config, "threads", "list", "--user", alice, "--namespace", "support", "--limit", "2")
    second = cli_json(
        config, "threads", "list", "--user", alice, "--namespace", "support", "--cursor", first["next_cursor"]
    )
    by_meta = cli_json(config, "threads", "list", "--user", alice, "--metadata", "n=1")
    paged = cli(config, "threads", "list", "--user", alice, "--limit", "1")
    none = cli(config, "threads", "list", "--user", alice, "--status", "archived")

    support = {t["thread_id"] for t in first["threads"] + second["threads"]}
    assert support == {f"{alice}-{i}" for i in range(3)} and second["next_cursor"] is None
    assert [t["thread_id"] for t in by_meta["threads"]] == [f"{alice}-1"]  # "1" parsed as JSON: the int
    assert "more: add --cursor " in paged.stdout
    assert none.exit_code == 0 and f"user {alice!r} has no threads matching the filters" in none.stdout


def test_threads_fork_copies_into_a_new_thread(memory_config, tmp_path):
    alice, thread = unique("alice"), unique("t")
    run_turns(memory_config, alice, thread, ["one", "two"])
    config = write_config(tmp_path, memory_config)
    history = cli_json(config, "threads", "history", "--user", alice, "--thread", thread, "--limit", "100")
    after_first_turn = next(c["checkpoint_id"] for c in history["checkpoints"] if c["step"] == 3)
    target = unique("fork")

    forked = cli_json(
        config, "threads", "fork", "--user", alice, "--thread", thread,
        "--checkpoint", after_first_turn, "--new-thread", target,
    )  # fmt: skip
    human = cli(config, "threads", "fork", "--user", alice, "--thread", thread)
    state = cli_json(config, "threads", "show", "--user", alice, "--thread", target)

    assert forked["thread_id"] == target and forked["metadata"]["forked_from"] == thread
    assert forked["status"] == "active" and forked["user_id"] == alice
    assert [m["data"]["content"] for m in state["state"]["messages"]] == ["one", "Hello stranger"]
    assert human.exit_code == 0 and f"forked {thread} at its latest checkpoint into" in human.stdout


def test_threads_archive_and_delete_ask_first(memory_config, tmp_path):
    alice, kept, gone = unique("alice"), unique("t"), unique("t")
    for thread in (kept, gone):
        run_turns(memory_config, alice, thread, ["I live in Paris."])
    config = write_config(tmp_path, memory_config)
    before = thread_status(memory_config, alice, kept)

    refused_archive = cli(config, "threads", "archive", "--user", alice, "--thread", kept, input="n\n")
    refused_delete = cli(config, "threads", "delete", "--user", alice, "--thread", gone)  # no answer: No
    unchanged = thread_status(memory_config, alice, kept), thread_status(memory_config, alice, gone)
    archived = cli(config, "threads", "archive", "--user", alice, "--thread", kept, input="y\n")
    deleted = cli_json(config, "threads", "delete", "--user", alice, "--thread", gone, "--yes")

    assert before[0] == "active" and before[1] > 0
    assert_refused(refused_archive)
    assert_refused(refused_delete)
    assert unchanged == (before, before)
    assert archived.exit_code == 0, archived.output
    assert (
        f"archived thread {kept} of user {alice}" in archived.stdout
        and "checkpoints deleted" in archived.stdout
    )
    assert thread_status(memory_config, alice, kept) == ("archived", 0)
    assert deleted == {"user_id": alice, "thread_id": gone, "deleted": True}
    assert thread_status(memory_config, alice, gone) == (None, 0)
    assert_clean_error(
        cli(config, "threads", "delete", "--user", alice, "--thread", gone, "--yes"), "does not exist"
    )


def test_threads_archive_json(memory_config, tmp_path):
    alice, thread = unique("alice"), unique("t")
    run_turns(memory_config, alice, thread, ["I live in Paris."])
    config = write_config(tmp_path, memory_config)

    result = cli_json(config, "threads", "archive", "--user", alice, "--thread", thread, "--yes")

    assert result["thread_id"] == thread and result["checkpoints_deleted"] is True
    assert result["archive_id"] and "Paris" in result["summary"]


@pytest.mark.parametrize(
    "command",
    [
        ["threads", "show"],
        ["threads", "history"],
        ["threads", "fork"],
        ["threads", "archive"],
        ["threads", "delete"],
    ],
)
def test_threads_of_another_user_exit_2_and_stay_as_they_are(memory_config, tmp_path, command):
    alice, thread = unique("alice"), unique("t")
    run_turns(memory_config, alice, thread, ["hello"])
    config = write_config(tmp_path, memory_config)
    before = thread_status(memory_config, alice, thread)

    stolen = cli(config, *command, "--user", unique("mallory"), "--thread", thread)
    malformed = cli(config, *command, "--user", "a b", "--thread", thread)

    assert_clean_error(stolen, f"thread {thread!r} belongs to another user")
    assert_clean_error(malformed, "user_id 'a b' is invalid")
    assert "[y/N]" not in stolen.output  # refused before anything was asked
    assert thread_status(memory_config, alice, thread) == before


def test_threads_list_rejects_a_malformed_user(memory_config, tmp_path):
    config = write_config(tmp_path, memory_config)
    assert_clean_error(cli(config, "threads", "list", "--user", "x" * 200), "user_id is 200 characters long")
    assert_clean_error(cli(config, "threads", "list", "--user", "u", "--status", "gone"), "gone")


# -- sessions --------------------------------------------------------------------------


def test_sessions_on_the_embedded_tier_say_it_is_empty(tmp_path):
    config = write_config(tmp_path, {"data_dir": str(tmp_path / "data")})

    listed = cli(config, "sessions", "list", "--user", "alice")
    missing = cli(config, "sessions", "show", "--user", "alice", "--session", "s1")

    assert listed.exit_code == 0, listed.output
    assert "user 'alice' has no live sessions" in listed.stdout
    assert "session.url is memory://" in listed.stderr
    assert_clean_error(missing, "session 's1' of user 'alice' does not exist")


@pytest.mark.redis
def test_sessions_list_show_and_end(redis_config, tmp_path):
    alice, session, other = unique("alice"), unique("s"), unique("s")

    async def start(manager: MemoryManager) -> None:
        await manager.sessions.start(alice, session, {"summary": "talked about tea", "turns": 3})
        await manager.sessions.start(alice, other, {"turns": 1})

    with_manager(redis_config, start)
    config = write_config(tmp_path, redis_config)

    listed = cli(config, "sessions", "list", "--user", alice)
    sessions = cli_json(config, "sessions", "list", "--user", alice)
    shown = cli(config, "sessions", "show", "--user", alice, "--session", session)
    record = cli_json(config, "sessions", "show", "--user", alice, "--session", session)
    stolen = cli(config, "sessions", "end", "--user", unique("mallory"), "--session", session)
    refused = cli(config, "sessions", "end", "--user", alice, "--session", session, input="n\n")
    still_live = cli_json(config, "sessions", "list", "--user", alice)
    ended = cli_json(config, "sessions", "end", "--user", alice, "--session", session, "--yes")
    left = cli_json(config, "sessions", "list", "--user", alice)

    assert listed.exit_code == 0 and session in listed.stdout and other in listed.stdout
    assert "memory://" not in listed.stderr
    assert {s["session_id"] for s in sessions["sessions"]} == {session, other}
    assert all(0 < s["ttl_seconds"] <= 3600 for s in sessions["sessions"])
    assert "talked about tea" in shown.stdout and "turns" in shown.stdout
    assert record["data"] == {"summary": "talked about tea", "turns": 3} and record["user_id"] == alice
    assert_clean_error(stolen, f"session {session!r} belongs to another user")
    assert_refused(refused)
    assert len(still_live["sessions"]) == 2
    assert ended["session_id"] == session and ended["archive_id"]
    assert [s["session_id"] for s in left["sessions"]] == [other]

    async def archives(manager: MemoryManager) -> list[Any]:
        return (await manager.users.export(alice))["long_term"]["archives"]

    [archive] = with_manager(redis_config, archives)
    assert archive["id"] == ended["archive_id"] and archive["summary"] == "talked about tea"


@pytest.mark.redis
def test_sessions_sweep_archives_expired_sessions(redis_config, tmp_path):
    alice, session = unique("alice"), unique("s")

    async def start_then_expire(manager: MemoryManager) -> None:
        await manager.sessions.start(alice, session, {"summary": "left mid-way"})
        store = manager.session_store
        # What Redis does when the TTL runs out, without waiting for it: the session key goes,
        # its shadow copy stays, and its expiry entry is due.
        await store.client.delete(store.keys.session(alice, session))
        await store.client.zadd(
            store.keys.expiry_index(), {store.keys.expiry_member(alice, session): time.time() - 1}
        )

    with_manager(redis_config, start_then_expire)
    config = write_config(tmp_path, redis_config)

    first = cli(config, "sessions", "sweep")
    again = cli_json(config, "sessions", "sweep")

    assert first.exit_code == 0, first.output
    assert "archived 1 expired session(s)" in first.stdout
    assert again == {"archived": 0}


# -- retention -------------------------------------------------------------------------


def with_retention(config: dict[str, Any], **retention: Any) -> dict[str, Any]:
    working = dict(config.get("working") or {})
    working["retention"] = retention
    return {**config, "working": working}


def test_retention_run_dry_run_confirmation_and_json(fresh_config, tmp_path):
    alice, thread = unique("alice"), unique("t")
    config_dict = with_retention(fresh_config, keep_last=2)
    run_turns(config_dict, alice, thread, ["one", "two", "three"])
    config = write_config(tmp_path, config_dict)
    before = thread_status(config_dict, alice, thread)

    dry = cli(config, "retention", "run", "--dry-run")
    dry_json = cli_json(config, "retention", "run", "--dry-run")
    refused = cli(config, "retention", "run", input="n\n")
    after_refusal = thread_status(config_dict, alice, thread)
    done = cli(config, "retention", "run", input="y\n")
    after = thread_status(config_dict, alice, thread)
    again = cli_json(config, "retention", "run", "--yes")

    assert dry.exit_code == 0, dry.output
    assert "retention policy" in dry.stdout and "every thread" in dry.stdout and "would be" in dry.stdout
    assert "threads" in dry.stdout  # the progress bar's label
    assert dry_json["dry_run"] is True and dry_json["pruned_threads"] == 1 and dry_json["failed"] == {}
    assert dry_json["pruned_checkpoints"] > 0
    assert_refused(refused)
    assert "keep last checkpoints" in refused.stderr  # the policy was shown before the question
    assert after_refusal == before
    assert done.exit_code == 0, done.output
    assert "done" in done.stdout and "checkpoints pruned" in done.stdout
    assert after[1] == before[1] - dry_json["pruned_checkpoints"]
    assert again["pruned_threads"] == 0 and again["dry_run"] is False


def test_retention_run_archives_idle_threads(fresh_config, tmp_path):
    from test_retention import make_idle

    alice, thread = unique("alice"), unique("t")
    config_dict = with_retention(fresh_config, max_idle="7d")
    run_turns(config_dict, alice, thread, ["I live in Paris."])

    async def age(manager: MemoryManager) -> None:
        await make_idle(manager, thread, days=30)

    with_manager(config_dict, age)
    config = write_config(tmp_path, config_dict)

    report = cli_json(config, "retention", "run", "--yes")

    assert report["archived"] == 1 and report["failed"] == {}
    assert thread_status(config_dict, alice, thread) == ("archived", 0)


def test_retention_run_lists_failures_and_exits_1(tmp_path, monkeypatch):
    from memory_tiers.retention import RetentionAPI, RetentionReport

    async def failing_run(self: RetentionAPI, **_: Any) -> RetentionReport:
        return RetentionReport(pruned_threads=1, pruned_checkpoints=3, failed={"t-bad": "BackendError: down"})

    monkeypatch.setattr(RetentionAPI, "run", failing_run)
    config = write_config(tmp_path, with_retention({"data_dir": str(tmp_path / "data")}, keep_last=1))

    human = cli(config, "retention", "run", "--yes")
    as_json = cli(config, "retention", "run", "--yes", "--json")

    assert human.exit_code == 1
    assert "failed (left as they were)" in human.stdout and "t-bad" in human.stdout and "down" in human.stdout
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["failed"] == {"t-bad": "BackendError: down"}


def test_retention_without_a_policy_says_so(tmp_path):
    config = write_config(tmp_path, {"data_dir": str(tmp_path / "data")})
    result = cli(config, "retention", "run")  # nothing to prune or expire: nothing to confirm
    assert result.exit_code == 0, result.output
    assert "no retention policy is configured" in result.stdout and "[y/N]" not in result.output


# -- users -----------------------------------------------------------------------------


def test_users_export_to_stdout_and_to_a_file(memory_config, tmp_path):
    alice, thread = unique("alice"), unique("t")
    run_turns(memory_config, alice, thread, ["I live in Paris."])
    config = write_config(tmp_path, memory_config)
    out = tmp_path / "alice.json"

    printed = cli(config, "users", "export", "--user", alice)
    written = cli(config, "users", "export", "--user", alice, "--output", str(out))

    export = json.loads(printed.stdout)
    assert export["format"] == "memory_tiers.user_export/1" and export["user_id"] == alice
    assert export["long_term"]["profile"]["document"] == {"location": "Paris"}
    assert [t["thread_id"] for t in export["working"]["threads"]] == [thread]
    assert written.exit_code == 0 and written.stdout == ""
    assert f"to {out}" in written.stderr
    assert json.loads(out.read_text())["long_term"]["profile"] == export["long_term"]["profile"]
    assert_clean_error(cli(config, "users", "export", "--user", "a b"), "user_id 'a b' is invalid")


def test_users_forget_asks_then_deletes_only_that_user(memory_config, tmp_path):
    alice, bob = unique("alice"), unique("bob")
    run_turns(memory_config, alice, unique("t"), ["I live in Paris."])
    run_turns(memory_config, bob, unique("t"), ["I live in Berlin."])
    config = write_config(tmp_path, memory_config)

    refused = cli(config, "users", "forget", "--user", alice, input="n\n")
    after_refusal = json.loads(cli(config, "users", "export", "--user", alice).stdout)
    forgot = cli(config, "users", "forget", "--user", alice, input="y\n")
    again = cli_json(config, "users", "forget", "--user", alice, "--yes")
    gone = json.loads(cli(config, "users", "export", "--user", alice).stdout)
    other = json.loads(cli(config, "users", "export", "--user", bob).stdout)

    assert_refused(refused)
    assert after_refusal["long_term"]["profile"]["document"] == {"location": "Paris"}
    assert forgot.exit_code == 0, forgot.output
    assert f"forgot user {alice}" in forgot.stdout and "mt_facts" in forgot.stdout
    assert again["found_anything"] is False and again["user_id"] == alice
    assert again["threads"] == 0 and set(again["long_term"]) >= {"mt_facts", "mt_threads"}
    assert gone["long_term"]["profile"] is None or gone["long_term"]["profile"]["document"] == {}
    assert gone["working"]["threads"] == []
    assert other["long_term"]["profile"]["document"] == {"location": "Berlin"}
    assert_clean_error(cli(config, "users", "forget", "--user", "a b"), "user_id 'a b' is invalid")
