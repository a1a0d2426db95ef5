"""Printing results: a table per backend, ratios, and one PASS/MISS line per target.

Line shapes are stable so that tests and readers can grep them:
``== <benchmark>: ...``, ``  <variant>  <p50>  <p99>``, ``ratio ...``, ``PASS|MISS ...`` and
indented notes (``plan ...``, ``check ...``).
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


def bound(benchmark: str, label: str, micros: float, limit: float) -> bool:
    """Print ``PASS`` or ``MISS`` for an absolute latency target in microseconds."""
    passed = micros <= limit
    verdict = "PASS" if passed else "MISS"
    print(f"  {verdict} {benchmark}: {label} = {micros:.0f} us (target <= {limit:g} us)", flush=True)
    return passed


def throughput(benchmark: str, label: str, ours: float, theirs: float) -> bool:
    """Print ``PASS`` or ``MISS`` for "at least as fast": ``ours / theirs`` as a speed ratio."""
    value = ours / theirs
    verdict = "PASS" if value >= 1.0 else "MISS"
    print(f"  {verdict} {benchmark}: {label} = {value:.2f}x as fast (target >= 1x)", flush=True)
    return value >= 1.0


def note(text: str) -> None:
    """An indented line of context (query plans, counts, warnings)."""
    print(f"  {text}", flush=True)


def rates(label: str, rows: Mapping[str, tuple[float, float]], unit: str) -> None:
    """A table of one-shot operations: variant -> (amount done, seconds), with the rate."""
    print(f"[{label}]")
    print(f"  {'variant':<{NAME_WIDTH}} {'seconds':>10} {unit + '/s':>14}")
    for name, (amount, seconds) in rows.items():
        print(f"  {name:<{NAME_WIDTH}} {seconds:>10.3f} {amount / seconds:>14,.0f}")
