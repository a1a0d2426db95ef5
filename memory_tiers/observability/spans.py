"""Spans: one per tier operation, named ``memory_tiers.<tier>.<operation>``.

A span's attributes name the tier, the operation and the ids it is about (``memory_tiers.user_id``
only when ``observability.include_user_id`` is on); exceptions are recorded on it and set its
status to error. Spans nest through OpenTelemetry's context, which follows asyncio tasks and the
sync bridge, so a store's span is a child of the node's that called it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, TracerProvider

from memory_tiers.ids import id_positions
from memory_tiers.observability.logs import ID_FIELDS, bind_ids, current_ids
from memory_tiers.observability.metrics import Metrics

SCOPE = "memory_tiers"
try:
    VERSION = metadata.version("memory-tiers")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    VERSION = "0"

C = TypeVar("C", bound=type)


class Telemetry:
    """The tracer, the counters and the span policy of one manager.

    Args:
        include_user_id: put ``memory_tiers.user_id`` on spans (``observability.include_user_id``).
        tracer_provider: where spans go; OpenTelemetry's global provider when None.
        meter_provider: where counters go; OpenTelemetry's global provider when None.
    """

    def __init__(
        self,
        *,
        include_user_id: bool = False,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.include_user_id = include_user_id
        self._own_provider = tracer_provider is not None
        self.tracer = trace.get_tracer(SCOPE, VERSION, tracer_provider=tracer_provider)
        self.metrics = Metrics(metrics.get_meter(SCOPE, VERSION, meter_provider=meter_provider))

    @property
    def recording(self) -> bool:
        """Whether spans can be recorded: a provider was given, or a global one was set."""
        return self._own_provider or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    @contextmanager
    def span(self, name: str, tier: str, operation: str, **ids: Any) -> Iterator[Span]:
        """A span around the block, current for its duration; ``ids`` not given (or None) come
        from the enclosing `bind_ids`."""
        if not self.recording:
            # No SDK configured anywhere: skip even the no-op span's context switch.
            yield trace.INVALID_SPAN
            return
        bound = current_ids()
        attributes = {"memory_tiers.tier": tier, "memory_tiers.operation": operation}
        for field in ID_FIELDS:
            value = ids.get(field)
            if not isinstance(value, str):
                value = getattr(bound, field)
            if value is not None and (field != "user_id" or self.include_user_id):
                attributes[f"memory_tiers.{field}"] = value
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise


def own_telemetry(obj: Any) -> Telemetry:
    """A store's telemetry: its ``telemetry`` attribute."""
    return obj.telemetry  # type: ignore[no-any-return]


def manager_telemetry(obj: Any) -> Telemetry:
    """A manager API's telemetry: its manager's."""
    return obj._manager.telemetry  # type: ignore[no-any-return]


def _traced(
    method: Callable[..., Any], tier: str, telemetry: Callable[[Any], Telemetry], bind: bool
) -> Callable[..., Any]:
    operation = method.__name__
    name = f"{SCOPE}.{tier}.{operation}"
    positions = id_positions(method)

    @functools.wraps(method)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        observer = telemetry(self)
        if not bind and not observer.recording:  # the hot path without an SDK: no span at all
            return await method(self, *args, **kwargs)
        ids = {
            field: args[index] if index is not None and index < len(args) else kwargs.get(field)
            for field, index in positions.items()
        }
        with observer.span(name, tier, operation, **ids):
            if not bind:
                return await method(self, *args, **kwargs)
            with bind_ids(**{key: value for key, value in ids.items() if isinstance(value, str)}):
                return await method(self, *args, **kwargs)

    return traced


def instrumented(
    tier: str,
    *,
    telemetry: Callable[[Any], Telemetry] = own_telemetry,
    skip: tuple[str, ...] = (),
    bind: bool = False,
) -> Callable[[C], C]:
    """Class decorator: every public coroutine method (inherited ones too) runs in a span
    ``memory_tiers.<tier>.<method>`` whose ids are read from the arguments named ``user_id``,
    ``thread_id`` and ``session_id``.

    Args:
        tier: the span names' and ``memory_tiers.tier``'s tier.
        telemetry: finds the `Telemetry` of an instance.
        skip: methods left as they are (long-running loops, say).
        bind: also name the ids on log records during the call (for manager APIs, the outermost
            calls).
    """

    def decorate(cls: C) -> C:
        for attr in dir(cls):
            raw = inspect.getattr_static(cls, attr)
            if attr.startswith("_") or attr in skip or not inspect.iscoroutinefunction(raw):
                continue
            setattr(cls, attr, _traced(raw, tier, telemetry, bind))
        return cls

    return decorate
