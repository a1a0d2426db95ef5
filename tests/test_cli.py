"""The ``memory-tiers`` command: demo, config check, db upgrade/current.

The CLI runs ``asyncio.run`` inside its commands, so these tests are plain sync functions.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from rich.console import Console

from memory_tiers import MemoryManager
from memory_tiers.cli import main
from memory_tiers.cli.demo import HINT, DemoResult, run_demo
from memory_tiers.long_term.migrate import head_revision


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write_yaml(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def assert_clean_error(result: Result, *needles: str) -> None:
    """Exit code 2, the message on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr


# -- demo ------------------------------------------------------------------------------


def test_demo_remembers_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    first = invoke("demo")
    assert first.exit_code == 0, first.output
    assert "Nice to meet you, Alice!" in first.output
    assert "Welcome back" not in first.output
    assert "starts empty in every run" in first.output
    assert HINT in first.output
    assert (tmp_path / ".memory_tiers" / "long_term.db").exists()
    assert (tmp_path / ".memory_tiers" / "working.db").exists()

    second = invoke("demo")
    assert second.exit_code == 0, second.output
    assert (
        "Welcome back, Alice! Last time you told me you live in Paris, you like green tea and "
        "you dislike olives." in second.output
    )
    assert "Welcome back, Bob! Last time you told me you live in Berlin and you like jazz." in second.output
    # The thread kept the first run's 8 messages.
    assert "10 messages" in second.output


def run_once(data_dir: Path) -> DemoResult:
    async def go() -> DemoResult:
        manager = MemoryManager.from_config({"data_dir": str(data_dir)})
        async with manager:
            return await run_demo(manager, Console(file=io.StringIO()))

    return asyncio.run(go())


def test_run_demo_result_per_user_and_turn(tmp_path: Path) -> None:
    first = run_once(tmp_path / "data")
    assert set(first.replies) == {"alice", "bob"}
    assert [len(replies) for replies in first.replies.values()] == [4, 4]
    alice = first.for_user("alice")
    assert alice[0].reply == "Nice to meet you, Alice!"
    assert alice[3].reply.startswith(
        "I know that your name is Alice, you live in Paris, you like green tea and you dislike olives."
    )
    assert [r.thread_messages for r in alice] == [2, 4, 6, 8]
    assert alice[-1].profile == {"name": "Alice", "location": "Paris"}
    assert {(f["attribute"], f["value"]) for f in alice[-1].facts} == {
        ("name", "Alice"),
        ("location", "Paris"),
        ("likes", "green tea"),
        ("dislikes", "olives"),
    }
    assert alice[-1].session == {"turns": 4, "topics": ["name", "location", "likes", "dislikes", "recap"]}
    assert alice[-1].session_ttl is not None and 0 < alice[-1].session_ttl <= 3600
    bob = first.for_user("bob")
    assert bob[-1].profile == {"name": "Bob", "location": "Berlin"}
    assert "Alice" not in " ".join(first.replies["bob"])

    second = run_once(tmp_path / "data")
    alice2 = second.for_user("alice")
    assert alice2[0].reply.startswith("Welcome back, Alice! Last time you told me you live in Paris")
    # Working memory persisted: the thread continues from the first run's messages.
    assert alice2[0].thread_messages == 10
    assert alice2[0].checkpoints > alice[-1].checkpoints
    # The embedded session tier is in-process: it started over.
    assert alice2[0].session["turns"] == 1
    # Restating known facts does not duplicate them.
    assert len(alice2[-1].facts) == 4


def test_demo_data_dir_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("demo", "--data-dir", "elsewhere")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "long_term.db").exists()
    assert not (tmp_path / ".memory_tiers").exists()


# -- config check ----------------------------------------------------------------------


def test_config_check_masks_passwords(tmp_path: Path) -> None:
    file = write_yaml(
        tmp_path / "c.yaml",
        {"long_term": {"url": "postgresql+asyncpg://u:secret@h/db"}, "session": {"ttl": "15m"}},
    )
    result = invoke("config", "check", str(file))
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output
    assert "postgresql+asyncpg://u:***@h/db" in result.stdout
    shown = yaml.safe_load(result.stdout)
    assert shown["session"]["ttl"] == "900s"
    assert shown["working"]["backend"] == "sqlite"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("session: {ttl: abc}\n", "session.ttl"),
        ("sesion: {ttl: 10}\n", "sesion: unknown key"),
        ("working: {backend: mongo}\n", "working.backend"),
        ("session: [unclosed\n", "is not valid YAML"),
    ],
)
def test_config_check_rejects_bad_files(tmp_path: Path, content: str, needle: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(content, encoding="utf-8")
    assert_clean_error(invoke("config", "check", str(file)), needle)


def test_config_check_missing_file(tmp_path: Path) -> None:
    assert_clean_error(invoke("config", "check", str(tmp_path / "nope.yaml")), "cannot read config file")


# -- db --------------------------------------------------------------------------------


def test_db_upgrade_then_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_yaml(tmp_path / "manual.yaml", {"data_dir": str(tmp_path / "d"), "setup": "manual"})
    head = head_revision()

    before = invoke("db", "current", "--config", str(config))
    assert before.exit_code == 0, before.output
    assert "current none" in before.output and f"head {head}" in before.output
    assert not (tmp_path / "d").exists()  # `db current` creates nothing

    # With setup: manual the manager refuses an outdated schema.
    refused = invoke("demo", "--config", str(config))
    assert_clean_error(refused, "memory-tiers db upgrade")

    upgraded = invoke("db", "upgrade", "--config", str(config))
    assert upgraded.exit_code == 0, upgraded.output
    assert f"none -> {head}" in upgraded.output
    assert (tmp_path / "d" / "working.db").exists()

    again = invoke("db", "upgrade", "--config", str(config))
    assert again.exit_code == 0, again.output
    assert f"{head} -> {head}" in again.output

    current = invoke("db", "current", "--config", str(config))
    assert current.exit_code == 0, current.output
    assert f"current {head}, head {head}" in current.output
    assert "up to date" in current.output

    ran = invoke("demo", "--config", str(config))
    assert ran.exit_code == 0, ran.output


def test_backend_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "down.yaml",
        {"long_term": {"url": "postgresql://u:secret@127.0.0.1:1/db", "connect_timeout": "1s"}},
    )
    result = invoke("db", "current", "--config", str(config))
    assert_clean_error(result, "long_term tier", "u:***@127.0.0.1:1")
    assert "secret" not in result.output


# -- against real servers --------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_demo_on_postgres_and_redis(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_postgres_url: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_yaml(
        tmp_path / "servers.yaml",
        {
            "working": {"backend": "postgres", "url": fresh_postgres_url},
            "session": {"url": redis_url, "key_prefix": redis_prefix},
            "long_term": {"url": fresh_postgres_url},
        },
    )
    first = invoke("demo", "--config", str(config))
    assert first.exit_code == 0, first.output
    assert "Nice to meet you, Alice!" in first.output
    assert "Welcome back" not in first.output
    assert "Sessions live in Redis" in first.output

    second = invoke("demo", "--config", str(config))
    assert second.exit_code == 0, second.output
    assert "Welcome back, Alice! Last time you told me you live in Paris" in second.output
    assert "Welcome back, Bob!" in second.output
    assert "10 messages" in second.output
    # Unlike the embedded tier, the Redis session outlived the first process.
    assert "turns=5" in second.output
    # Nothing was written to the embedded data dir.
    assert not (tmp_path / ".memory_tiers" / "long_term.db").exists()
