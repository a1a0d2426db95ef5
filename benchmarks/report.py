"""Printing results: a table per backend, ratios, and one PASS/MISS line per target.

Line shapes are stable so that tests and readers can grep them:
``== <benchmark>: ...``, ``  <variant>  <p50>  <p99>``, ``ratio ...`` and ``PASS|MISS ...``.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.measure import Plan, Stats

NAME_WIDTH = 44


def header(benchmark: str, title: str, plan: Plan) -> None:
    """The first line of a benchmark's output."""
    print(f"\n== {benchmark}: {title} (iterations={plan.iterations}, warmup={plan.warmup})", flush=True)


def table(backend: str, stats: Mapping[str, Stats]) -> None:
    """p50 and p99 of each variant measured on one backend."""
    print(f"[{backend}]")
    print(f"  {'variant':<{NAME_WIDTH}} {'p50 us':>10} {'p99 us':>10}")
    for name, s in stats.items():
        print(f"  {name:<{NAME_WIDTH}} {s.p50:>10.1f} {s.p99:>10.1f}")


def ratio(label: str, numerator: Stats, denominator: Stats) -> float:
    """Print and return ``numerator / denominator`` at p50 (p99 ratio alongside, for reference)."""
    value = numerator.p50 / denominator.p50
    print(f"  ratio {label}: {value:.2f}x p50 ({numerator.p99 / denominator.p99:.2f}x p99)")
    return value


def target(benchmark: str, label: str, value: float, limit: float) -> bool:
    """Print ``PASS`` or ``MISS`` for a ratio target; return whether it passed."""
    passed = value <= limit
    verdict = "PASS" if passed else "MISS"
    print(f"  {verdict} {benchmark}: {label} = {value:.2f}x (target <= {limit:g}x)", flush=True)
    return passed
