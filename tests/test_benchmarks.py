"""Smoke test of the benchmark suite: it runs, prints its results and cleans up after itself.

Timings are never asserted: PASS and MISS are both fine, only errors fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent


def run_quick_suite(redis_url: str, postgres_admin_url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks", "--quick", "tiers", "turn", "history"]
    command += ["--redis-url", redis_url, "--postgres-url", postgres_admin_url]
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
    assert "[in-memory]" in out
    assert out.count("ratio 3 nodes / no memory") == 3
    verdicts = [line.split()[0] for line in out.splitlines() if line.strip().startswith(("PASS", "MISS"))]
    assert len(verdicts) == 7  # 4 tier targets, 1 turn target, 2 history targets

    # The run's own database and keys are gone.
    found = re.search(r"run database: (mt_bench_[0-9a-f]+); run key prefix: (mt-bench-[0-9a-f]+)", out)
    assert found, out[:500]
    database, prefix = found.groups()
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        rows = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchall()
    assert rows == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}:*", count=1000)) == []
    finally:
        client.close()
