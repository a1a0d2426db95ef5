"""Counters: in-process counts per manager (``manager.metrics.snapshot()``) and the same
increments on OpenTelemetry counters, exported by whatever meter provider is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import Meter

# Name -> what one increment means. OpenTelemetry names them ``memory_tiers.<name>``.
COUNTERS: dict[str, str] = {
    "loads": "memory loads completed by a load node (load_memory, load_session, load_long_term)",
    "saves": "memory saves completed by a save node (save_memory, save_session, save_long_term)",
    "facts_written": "facts stored from a turn's extracted candidates (save, deferred learning, archive)",
    "retries": "backend calls retried after a transient error (Redis commands, the long-term load and "
    "save, deferred learning's save)",
    "degradations": "node calls served without an unreachable tier (on_unavailable: degrade): a load "
    "without its data, a session write skipped",
    "ttl_refreshes": "sessions whose expiry a sliding read pushed forward",
    "sessions_archived": "session contexts archived into long-term memory (ended or expired)",
    "checkpoints_pruned": "checkpoints removed by retention runs",
    "threads_archived": "threads archived (summarized into long-term memory, checkpoints dropped)",
}


class Metrics:
    """The counters of one manager.

    Args:
        meter: the OpenTelemetry meter the counters are created on.

    Example:
        >>> from opentelemetry.metrics import NoOpMeter
        >>> metrics = Metrics(NoOpMeter("memory_tiers"))
        >>> metrics.add("loads")
        >>> metrics.snapshot()["loads"]
        1
    """

    def __init__(self, meter: Meter) -> None:
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._counters = {
            name: meter.create_counter(f"memory_tiers.{name}", description=description)
            for name, description in COUNTERS.items()
        }

    def add(self, name: str, amount: int = 1, attributes: Mapping[str, Any] | None = None) -> None:
        """Count ``amount`` more of ``name`` (one of `COUNTERS`); ``attributes`` go to the
        OpenTelemetry counter only (keep them few-valued: never ids)."""
        if amount <= 0:
            return
        self._counts[name] += amount
        self._counters[name].add(amount, attributes)

    def snapshot(self) -> dict[str, int]:
        """Every counter's total since the manager was built."""
        return dict(self._counts)
