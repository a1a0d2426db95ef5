"""Smoke test of the benchmark suite: it runs, prints its results and cleans up after itself.

Timings are never asserted: PASS and MISS are both fine, only errors fail. The first three
benchmarks run together (about 10 s); recall, store, the bulk ones and concurrency each take
2-10 s even at their quick sizes (seeding, extra databases and servers), so each has a test of
its own: a failure names the benchmark, and ``-k`` can pick or skip one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def run_quick_suite(
    redis_url: str, postgres_admin_url: str, *names: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks", "--quick", *(names or ("tiers", "turn", "history"))]
    command += ["--redis-url", redis_url, "--postgres-url", postgres_admin_url, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORY_TIERS_BENCH_")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_the_quick_suite_prints_every_result_and_cleans_up(redis_url: str, postgres_server_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    done = run_quick_suite(redis_url, postgres_server_url)

    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for benchmark in ("tiers", "turn", "history"):
        assert f"== {benchmark}:" in out
        assert f"-- {benchmark} done" in out
    for stack in ("postgres+redis", "embedded"):
        assert f"{stack} load / raw floor" in out
        assert f"{stack} save / raw floor" in out
        assert f"{stack} turn 200 / turn 1" in out
    assert "postgres+redis wrapped turn / no-memory turn" in out
    assert "[in-memory]" in out and "[redis-checkpointer]" in out
    assert out.count("ratio 3 nodes / no memory") == 4
    verdicts = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("PASS", "MISS"))]
    assert len(verdicts) == 7  # 4 tier targets, 1 turn target, 2 history targets

    assert_cleaned_up(out, redis_url, postgres_server_url, psycopg)


def assert_cleaned_up(out: str, redis_url: str, postgres_server_url: str, psycopg: object) -> None:
    """The run's database, the benchmarks' own databases and the run's keys are gone."""
    found = re.search(r"run database: (mt_bench_[0-9a-f]+); run key prefix: (mt-bench-[0-9a-f]+)", out)
    assert found, out[:500]
    database, prefix = found.groups()
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
            (database, f"{database}\\_%"),
        ).fetchall()
    assert rows == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}:*", count=1000)) == []
    finally:
        client.close()


class Expected(NamedTuple):
    lines: tuple[str, ...]
    verdicts: int


EXPECTED = {
    "recall": Expected(
        (
            "[postgresql: 20,000 facts over 200 users]",
            "[sqlite: 20,000 facts over 200 users]",
            "check search_facts vs raw floor on 20 queries: same facts",
            "plan load_context (library):",
            "plan search_facts (library):",
            "postgresql search_facts p99 at 20,000 facts",
            "sqlite load_context p50 at 20,000 facts",
        ),
        8,  # p50 and p99 of load_context and search_facts, on two databases
    ),
    "store": Expected(
        (
            "check memory_tiers SqlStore (PostgreSQL) vs InMemoryStore",
            "check memory_tiers SqlStore (SQLite) vs InMemoryStore",
            "check AsyncPostgresStore vs InMemoryStore",
            "[get]",
            "[put]",
            "[search]",
            "get / AsyncPostgresStore get",
            "memory_tiers SqlStore (SQLite) search / AsyncSqliteStore search",
        ),
        2,
    ),
    "bulk": Expected(
        (
            "check checkpoints left: ours 10, LangGraph's 10 (expected 10 each)",
            "[prune]",
            "[forget]",
            "[migrate]",
            "check after the run: threads per version {2: 100}, 0 failed",
        ),
        2,
    ),
    "bulk-redis": Expected(
        (
            "check copy: ours 132 checkpoints in 11 threads, LangGraph's 132",
            "check checkpoints left: ours 10, LangGraph's 10 (expected 10 each)",
            "[prune]",
            "AsyncRedisSaver.aprune",
            "[forget]",
            "[migrate]",
            "check after the run: threads per version {2: 50}, 0 failed",
        ),
        2,
    ),
    "bulk-sqlite": Expected(
        (
            "check copy: ours 132 checkpoints in 11 threads, LangGraph's 132",
            "check checkpoints left: ours 10 (expected 10); AsyncSqliteSaver has no aprune",
            "[prune]",
            "[forget]",
            "[migrate]",
            "check after the run: threads per version {2: 50}, 0 failed",
        ),
        1,
    ),
    "bulk-memory": Expected(
        (
            "check copy: ours 132 checkpoints in 11 threads, LangGraph's 132",
            "check checkpoints left: ours 10 (expected 10); InMemorySaver has no aprune",
            "[prune]",
            "[forget]",
            "[migrate]",
            "check after the run: threads per version {2: 50}, 0 failed",
        ),
        1,
    ),
    "concurrency": Expected(
        ("[postgres+redis, 10 concurrent sessions: turn latency]", "throughput", "wrap(agent) / no memory"),
        0,
    ),
}


@pytest.mark.parametrize("benchmark", list(EXPECTED))
def test_each_larger_benchmark_prints_its_results_and_cleans_up(
    benchmark: str, redis_url: str, postgres_server_url: str, tmp_path: Path
) -> None:
    psycopg = pytest.importorskip("psycopg")
    plotting = benchmark == "recall" and importlib.util.find_spec("matplotlib") is not None
    extra = ("--plot", str(tmp_path)) if plotting else ()
    done = run_quick_suite(redis_url, postgres_server_url, benchmark, extra=extra)

    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"== {benchmark}:" in out
    assert f"-- {benchmark} done" in out
    for line in EXPECTED[benchmark].lines:
        assert line in out, line
    verdicts = [line for line in out.splitlines() if line.strip().startswith(("PASS", "MISS"))]
    assert len(verdicts) == EXPECTED[benchmark].verdicts, verdicts
    if plotting:
        assert (tmp_path / "recall_vs_facts.png").stat().st_size > 0
    assert_cleaned_up(out, redis_url, postgres_server_url, psycopg)
