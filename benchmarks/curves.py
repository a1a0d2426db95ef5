"""Curves a benchmark hands back for plotting: latency percentiles against a size."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.measure import Stats

HISTORY = "history"
"""The figure of tier cost per turn against the thread's history length."""
RECALL = "recall"
"""The figure of recall latency against the number of facts stored."""


@dataclass
class Curve:
    """One line of a figure: ``label`` in the legend, p50 and p99 at each ``x``."""

    figure: str
    label: str
    x: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    def add(self, x: float, stats: Stats) -> None:
        """Append the point measured at ``x``."""
        self.x.append(x)
        self.p50.append(stats.p50)
        self.p99.append(stats.p99)
