"""Command line: ``python -m benchmarks [names...] [--quick] [--plot DIR] [--redis-url URL]
[--postgres-url URL]``.

Exit status: 0 when every selected benchmark ran (whatever PASS/MISS said), 1 when one failed,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from benchmarks import bulk, bulk_savers, concurrency, history, plot, recall, store, tiers, turn
from benchmarks.curves import Curve
from benchmarks.servers import POSTGRES_ENV, REDIS_ENV, Servers, open_servers, resolve_urls

Benchmark = Callable[[Servers, bool], Awaitable[list[Curve] | None]]
"""A benchmark: ``run(servers, quick)``, printing its results; it may return curves to plot."""
BENCHMARKS: dict[str, Benchmark] = {
    "tiers": tiers.run,
    "turn": turn.run,
    "history": history.run,
    "recall": recall.run,
    "store": store.run,
    "bulk": bulk.run,
    "bulk-redis": bulk_savers.run_redis,
    "bulk-sqlite": bulk_savers.run_sqlite,
    "bulk-memory": bulk_savers.run_memory,
    "concurrency": concurrency.run,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of memory_tiers against raw round trips, measured in one run.",
    )
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], metavar="name",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a few iterations: seconds, not minutes")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write PNG figures of the history and recall curves to DIR (needs the bench extra)",
    )
    parser.add_argument("--redis-url", help=f"Redis server (default: ${REDIS_ENV} or local)")
    parser.add_argument(
        "--postgres-url",
        help=f"PostgreSQL admin URL, used to create and drop the run's database "
        f"(default: ${POSTGRES_ENV} or postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    return parser.parse_args(argv)


async def run(
    names: Sequence[str], quick: bool, redis_url: str, postgres_url: str, plot_dir: Path | None = None
) -> int:
    """Run the benchmarks in order on this run's own database and key prefix; count failures."""
    failures = 0
    curves: list[Curve] = []
    async with open_servers(redis_url, postgres_url) as servers:
        database = servers.postgres_url.rsplit("/", 1)[-1]
        print(f"run database: {database}; run key prefix: {servers.key_prefix}", flush=True)
        for name in names:
            started = time.monotonic()
            try:
                curves += await BENCHMARKS[name](servers, quick) or []
            except Exception:
                failures += 1
                print(f"\nERROR {name}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            else:
                print(f"-- {name} done in {time.monotonic() - started:.1f} s", flush=True)
    if plot_dir is not None:
        for path in plot.write(plot_dir, curves):
            print(f"plot written: {path}", flush=True)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, and return the exit status."""
    args = parse_args(argv)
    names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)
    redis_url, postgres_url = resolve_urls(args.redis_url, args.postgres_url)
    logging.basicConfig(level=logging.WARNING)
    print(
        f"memory_tiers benchmarks: {', '.join(names)}{' (quick)' if args.quick else ''}; "
        f"python {platform.python_version()}, {os.cpu_count()} cpus; times in microseconds",
        flush=True,
    )
    try:
        failures = asyncio.run(run(names, args.quick, redis_url, postgres_url, args.plot))
    except Exception as exc:  # the servers could not be reached or prepared
        print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 1 if failures else 0
