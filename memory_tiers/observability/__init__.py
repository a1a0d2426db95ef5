"""Observability: OpenTelemetry spans and counters, and log records that name the turn.

Only ``opentelemetry-api`` is needed: without an SDK configured every span and counter is the
API's no-op. See ``docs/observability.md`` for the span names, attributes and counters.
"""

from memory_tiers.observability.logs import TurnContextFilter, bind_ids, current_ids, get_logger, mask_secrets
from memory_tiers.observability.metrics import COUNTERS, Metrics
from memory_tiers.observability.spans import Telemetry, instrumented, manager_telemetry

__all__ = [
    "COUNTERS",
    "Metrics",
    "Telemetry",
    "TurnContextFilter",
    "bind_ids",
    "current_ids",
    "get_logger",
    "instrumented",
    "manager_telemetry",
    "mask_secrets",
]
