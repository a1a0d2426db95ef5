"""``memory-tiers doctor``: passes on a healthy setup, names the failing check otherwise, and
changes nothing (no schema setup, no file created, no key touched)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from services import redis_client
from sqlalchemy.ext.asyncio import create_async_engine
from test_cli_lifecycle import cli, cli_json, with_manager, write_config

from memory_tiers import MemoryManager
from memory_tiers.config import load_config
from memory_tiers.long_term import migrate
from memory_tiers.working.checkpointer import open_checkpointer

HEAD = migrate.head_revision()


def statuses(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(c["tier"], c["check"]): c["status"] for c in report["checks"]}


def detail(report: dict[str, Any], tier: str, check: str) -> str:
    return next(c["detail"] for c in report["checks"] if (c["tier"], c["check"]) == (tier, check))


def doctor(config: Path) -> tuple[int, dict[str, Any], str]:
    """Exit code, the --json report, and the human output."""
    as_json = cli(config, "doctor", "--json")
    human = cli(config, "doctor")
    assert as_json.exit_code == human.exit_code
    assert "Traceback" not in human.output + as_json.output
    return as_json.exit_code, json.loads(as_json.stdout), human.stdout


def upgrade_to(url: str, revision: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url)
        try:
            await migrate.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_doctor_passes_on_a_healthy_setup(memory_config, tmp_path):
    async def turn(manager: MemoryManager) -> None:
        graph = memory_graph(manager)
        await graph.ainvoke(
            {"messages": [("user", "hi")]}, turn_config(unique("u"), unique("t"), unique("s"))
        )

    with_manager(memory_config, turn)  # a session too: its expiry index is persistent by design
    config = write_config(tmp_path, memory_config)

    code, report, human = doctor(config)

    assert code == 0, human
    assert report["ok"] is True
    checks = statuses(report)
    assert set(checks.values()) == {"ok"}
    expected = {
        ("long-term", "reachable"),
        ("long-term", "schema revision"),
        ("working", "reachable"),
        ("working", "checkpointer answers"),
        ("session", "reachable"),
        ("session", "keys have a TTL"),
    }
    assert expected <= set(checks)
    if memory_config.get("working", {}).get("backend") == "postgres":
        assert checks[("working", "saver schema")] == "ok"
    assert detail(report, "long-term", "schema revision") == f"{HEAD} (head)"
    assert f"all {len(checks)} checks passed" in human and "memory-tiers doctor" in human


def test_doctor_fails_on_a_fresh_database_with_setup_manual(empty_sql_url, tmp_path):
    on_postgres = empty_sql_url.startswith("postgresql")
    working = {"backend": "postgres", "url": empty_sql_url} if on_postgres else {"backend": "sqlite"}
    settings = {"data_dir": str(tmp_path / "data"), "setup": "manual", "long_term": {"url": empty_sql_url}}
    config = write_config(tmp_path, {**settings, "working": working})

    code, report, human = doctor(config)
    made = sorted(p.name for p in tmp_path.iterdir())
    refused = cli(config, "threads", "list", "--user", "alice")  # the manager itself refuses to open

    assert code == 1 and report["ok"] is False
    checks = statuses(report)
    if on_postgres:
        assert checks[("long-term", "reachable")] == "ok"
        assert checks[("long-term", "schema revision")] == "fail"
        assert f"not set up, head is {HEAD}: run `memory-tiers db upgrade`" in detail(
            report, "long-term", "schema revision"
        )
        assert checks[("working", "checkpointer answers")] == "fail"  # its tables do not exist
        assert "long-term schema revision" in human and "working checkpointer answers" in human
    else:
        assert checks[("long-term", "reachable")] == "fail"
        assert "does not exist: run `memory-tiers db upgrade`" in detail(report, "long-term", "reachable")
        assert checks[("long-term", "schema revision")] == "skipped"
        assert checks[("working", "reachable")] == "fail"
        assert made == ["memory_tiers.yaml"]  # doctor made no file
    assert checks[("session", "reachable")] == "ok"  # the other tiers were still checked
    assert refused.exit_code == 2 and "memory-tiers db upgrade" in refused.stderr

    # doctor created nothing: the schema is still unset, and db upgrade is what fixes it.
    assert cli(config, "db", "current").stdout.count("current none") == 1
    assert cli(config, "db", "upgrade").exit_code == 0
    assert doctor(config)[0] == 0


def test_doctor_fails_on_an_outdated_schema(empty_sql_url, tmp_path):
    settings = {"data_dir": str(tmp_path / "data"), "setup": "manual", "long_term": {"url": empty_sql_url}}
    cfg = load_config(settings)
    upgrade_to(empty_sql_url, "0004")  # as an older memory_tiers left it

    async def set_up_working() -> None:
        async with open_checkpointer(cfg.working, cfg.data_dir, setup=True):
            pass

    asyncio.run(set_up_working())
    config = write_config(tmp_path, settings)

    code, report, human = doctor(config)

    assert code == 1
    checks = statuses(report)
    assert checks[("long-term", "schema revision")] == "fail"
    assert f"at 0004, head is {HEAD}" in detail(report, "long-term", "schema revision")
    assert checks[("working", "checkpointer answers")] == "ok"
    assert "1 check(s) failed: long-term schema revision" in human
    assert cli(config, "db", "current").stdout.count("current 0004") == 1  # doctor migrated nothing


@pytest.mark.redis
def test_doctor_fails_on_a_session_key_without_ttl_and_leaves_it_alone(tmp_path, redis_url, redis_prefix):
    settings = {"data_dir": str(tmp_path / "data"), "session": {"url": redis_url, "key_prefix": redis_prefix}}
    config = write_config(tmp_path, settings)
    assert cli(config, "db", "upgrade").exit_code == 0
    stray = f"{redis_prefix}:{{alice}}:session:stray"
    client = redis_client(redis_url)
    try:
        client.set(stray, "{}")  # no TTL: what a buggy writer would leave behind
        code, report, human = doctor(config)
        ttl_after = client.ttl(stray)
    finally:
        client.delete(stray)
        client.close()
    healthy = doctor(config)

    assert code == 1
    assert statuses(report)[("session", "keys have a TTL")] == "fail"
    assert f"1 of 1 key(s) under {redis_prefix}:" in detail(report, "session", "keys have a TTL")
    assert stray in detail(report, "session", "keys have a TTL")
    assert "session keys have a TTL" in human
    assert ttl_after == -1  # reported, not fixed
    assert healthy[0] == 0


def test_doctor_reports_unreachable_tiers_and_checks_the_others(tmp_path):
    config = write_config(
        tmp_path,
        {
            "data_dir": str(tmp_path / "data"),
            "session": {"url": "redis://127.0.0.1:1/0", "connect_timeout": "2s"},
            "long_term": {"url": "postgresql://u:secret@127.0.0.1:1/db", "connect_timeout": "2s"},
        },
    )

    code, report, human = doctor(config)

    checks = statuses(report)
    assert code == 1
    assert (
        checks[("long-term", "reachable")] == "fail" and checks[("long-term", "schema revision")] == "skipped"
    )
    assert "u:***@127.0.0.1:1" in detail(report, "long-term", "reachable")
    assert checks[("session", "reachable")] == "fail"
    assert checks[("session", "keys have a TTL")] == "skipped"
    assert checks[("working", "reachable")] == "fail"  # the SQLite file was never set up
    assert "secret" not in human and "secret" not in str(report)


def test_doctor_json_is_only_json(tmp_path):
    config = write_config(tmp_path, {"data_dir": str(tmp_path / "data")})
    assert cli(config, "db", "upgrade").exit_code == 0
    report = cli_json(config, "doctor")
    assert report["ok"] is True
    assert all(set(c) == {"tier", "check", "status", "detail"} for c in report["checks"])
