"""Timing: variants interleaved round-robin per iteration, so machine noise hits them all alike."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One thing to time: ``run(iteration)`` is awaited once per iteration."""

    name: str
    run: Callable[[int], Awaitable[object]]


@dataclass(frozen=True)
class Stats:
    """Latency percentiles of one variant, in microseconds."""

    p50: float
    p99: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Percentiles of ``samples`` (nearest-rank p99)."""
        ordered = sorted(samples)
        rank = max(1, math.ceil(0.99 * len(ordered)))
        return cls(p50=statistics.median(ordered), p99=ordered[rank - 1], count=len(ordered))


@dataclass(frozen=True)
class Plan:
    """How many iterations to run, after how many untimed warm-up ones."""

    iterations: int
    warmup: int


async def interleave(variants: Sequence[Variant], plan: Plan) -> dict[str, Stats]:
    """Run every variant once per iteration, rotating which goes first, and time each call.

    Warm-up iterations run the same calls (connections, prepared statements, caches) untimed.
    """
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    count = len(variants)
    for iteration in range(plan.warmup + plan.iterations):
        shift = iteration % count
        for variant in [*variants[shift:], *variants[:shift]]:
            start = time.perf_counter_ns()
            await variant.run(iteration)
            elapsed = time.perf_counter_ns() - start
            if iteration >= plan.warmup:
                samples[variant.name].append(elapsed / 1000)
    return {name: Stats.of(values) for name, values in samples.items()}
