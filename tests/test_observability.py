"""Observability: spans per tier operation, counters, and log records that name the turn.

Each test gives its manager its own SDK providers (``tracer_provider=``, ``meter_provider=``), so
no OpenTelemetry global is ever set and other tests run on the API's no-op.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_agents import fake_model, memory_agent, tool_call
from helpers import memory_graph, turn_config, unique
from langchain_core.messages import AIMessage
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from memory_tiers import BackendUnavailableError, MemoryManager, OwnershipError
from memory_tiers.observability import bind_ids, get_logger

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret-pw"


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    providers: dict[str, Any]

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def counters(self) -> dict[str, int]:
        data = self.metrics.get_metrics_data()
        totals: dict[str, int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    totals[metric.name] = sum(int(point.value) for point in metric.data.data_points)
        return totals


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(spans, reader, {"tracer_provider": tracer_provider, "meter_provider": meter_provider})
    tracer_provider.shutdown()
    meter_provider.shutdown()


def with_user_ids(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "observability": {"include_user_id": True}}


def children(otel: Otel, parent: ReadableSpan) -> list[str]:
    return sorted(
        span.name
        for span in otel.finished()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    )


def assert_turn_spans(otel: Otel, user: str, thread: str, session: str) -> None:
    (load,) = otel.named("memory_tiers.node.load_memory")
    (save,) = otel.named("memory_tiers.node.save_memory")
    assert children(otel, load) == ["memory_tiers.long_term.load_context", "memory_tiers.session.load"]
    assert children(otel, save) == ["memory_tiers.long_term.save_turn", "memory_tiers.session.save"]
    assert load.attributes["memory_tiers.operation"] == "load"
    assert save.attributes["memory_tiers.tier"] == "all"
    for name in (
        "memory_tiers.node.load_memory",
        "memory_tiers.session.load",
        "memory_tiers.long_term.load_context",
        "memory_tiers.long_term.save_turn",
        "memory_tiers.session.save",
    ):
        (span,) = otel.named(name)
        assert span.attributes["memory_tiers.user_id"] == user, name
        assert span.attributes["memory_tiers.thread_id"] == thread, name
        assert span.attributes["memory_tiers.session_id"] == session, name
        assert span.status.status_code is not StatusCode.ERROR, name
    assert otel.named("memory_tiers.session.load")[0].attributes["memory_tiers.tier"] == "session"


async def test_a_turn_has_a_span_per_node_with_a_child_per_tier(memory_config, otel):
    user, thread, session = unique("alice"), unique("t"), unique("s")
    async with MemoryManager(with_user_ids(memory_config), **otel.providers) as manager:
        graph = memory_graph(manager)
        otel.spans.clear()  # opening the manager traced its schema checks
        await graph.ainvoke({"messages": [("user", "I'm Alice")]}, turn_config(user, thread, session))
    assert_turn_spans(otel, user, thread, session)


async def test_memory_tool_calls_name_the_turn_on_their_spans(memory_config, otel):
    user, thread, session = unique("alice"), unique("t"), unique("s")
    model = fake_model(tool_call("search_memory", query="tea"), AIMessage("ok"))
    async with MemoryManager(with_user_ids(memory_config), **otel.providers) as manager:
        agent = memory_agent(manager, model, tools=True)
        await agent.ainvoke({"messages": [("user", "What do I drink?")]}, turn_config(user, thread, session))
    (search,) = otel.named("memory_tiers.long_term.search_facts")
    assert search.attributes["memory_tiers.user_id"] == user
    assert search.attributes["memory_tiers.thread_id"] == thread
    assert search.attributes["memory_tiers.session_id"] == session


def test_sync_turns_nest_their_spans_across_the_bridge(tmp_path, otel):
    user, thread, session = unique("alice"), unique("t"), unique("s")
    with MemoryManager(with_user_ids({"data_dir": str(tmp_path)}), **otel.providers) as manager:
        graph = memory_graph(manager)
        otel.spans.clear()
        graph.invoke({"messages": [("user", "hi")]}, turn_config(user, thread, session))
    assert_turn_spans(otel, user, thread, session)


async def test_user_ids_stay_off_spans_unless_configured(memory_config, otel):
    user, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config, **otel.providers) as manager:
        await memory_graph(manager).ainvoke({"messages": [("user", "hi")]}, turn_config(user, thread))
        await manager.sessions.get(user, thread)
    assert otel.named("memory_tiers.sessions.get")
    assert otel.named("memory_tiers.session.save")[0].attributes["memory_tiers.thread_id"] == thread
    assert all("memory_tiers.user_id" not in span.attributes for span in otel.finished())
    assert all(user not in str(dict(span.attributes)) for span in otel.finished())


async def test_an_ownership_error_is_recorded_on_its_spans(memory_config, otel):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config, **otel.providers) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t"), session))
        otel.spans.clear()
        with pytest.raises(OwnershipError):  # bob's own thread, alice's session id
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(bob, unique("t"), session))
    failed = [span for span in otel.finished() if span.status.status_code is StatusCode.ERROR]
    assert {span.name for span in failed} == {"memory_tiers.session.load", "memory_tiers.node.load_memory"}
    for span in failed:
        assert span.attributes["error.type"] == "OwnershipError"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"].endswith("OwnershipError")
    assert not otel.named("memory_tiers.node.save_memory")


async def test_counters_count_loads_saves_facts_and_ttl_refreshes(memory_config, otel):
    user, thread, session = unique("alice"), unique("t"), unique("s")
    turns = 3
    async with MemoryManager(memory_config, **otel.providers) as manager:
        graph = memory_graph(manager)
        for turn in range(turns):
            await graph.ainvoke(
                {"messages": [("user", f"I like topic {turn}.")]}, turn_config(user, thread, session)
            )
        facts = await manager.long_term.list_facts(user)
        await manager.sessions.end(user, session)
        await manager.threads.archive(user, thread)
        counts = manager.metrics.snapshot()
    assert len(facts) == turns
    assert counts == {
        "loads": turns,
        "saves": turns,
        "facts_written": turns,
        "retries": 0,
        "degradations": 0,
        # The first turn's session does not exist yet; `end` reads it once more.
        "ttl_refreshes": turns,
        "sessions_archived": 1,
        "checkpoints_pruned": 0,
        "threads_archived": 1,
    }
    exported = otel.counters()
    assert {name: exported.get(f"memory_tiers.{name}", 0) for name in counts} == counts


async def test_retention_counts_pruned_checkpoints(tmp_path, otel):
    config = {"data_dir": str(tmp_path), "working": {"retention": {"keep_last": 1}}}
    user, thread = unique("alice"), unique("t")
    async with MemoryManager(config, **otel.providers) as manager:
        graph = memory_graph(manager)
        for _ in range(2):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(user, thread))
        report = await manager.retention.run()
        counts = manager.metrics.snapshot()
    assert report.pruned_checkpoints > 0
    assert counts["checkpoints_pruned"] == report.pruned_checkpoints
    assert otel.counters()["memory_tiers.checkpoints_pruned"] == report.pruned_checkpoints
    (run,) = otel.named("memory_tiers.retention.run")
    assert run.status.status_code is not StatusCode.ERROR


class BrokenExtractor:
    def extract(self, messages: Any, context: Any) -> list[Any]:
        raise RuntimeError("extractor bug")


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    """Every record reaching the ``memory_tiers`` logger (from any child module)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(logging.DEBUG), logging.getLogger("memory_tiers")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_log_records_name_the_turn_inside_it_and_none_outside(memory_config, captured):
    user, thread, session = unique("alice"), unique("t"), unique("s")
    async with MemoryManager(memory_config) as manager:
        manager.extractors.append(BrokenExtractor())
        await memory_graph(manager).ainvoke(
            {"messages": [("user", "hi")]}, turn_config(user, thread, session)
        )
    (failure,) = [record for record in captured if record.name == "memory_tiers.learning"]
    assert "extractor BrokenExtractor failed" in failure.getMessage()
    assert (failure.user_id, failure.thread_id, failure.session_id) == (user, thread, session)

    get_logger("memory_tiers.learning").warning("outside any turn")
    outside = captured[-1]
    assert (outside.user_id, outside.thread_id, outside.session_id) == (None, None, None)


async def test_a_password_in_a_url_never_reaches_a_log_line(tmp_path, captured, monkeypatch):
    url = f"postgresql://app:{SECRET}@db.internal:5432/agents"
    config = {"data_dir": str(tmp_path), "long_term": {"extraction": {"mode": "deferred", "debounce": 0.01}}}
    async with MemoryManager(config) as manager:
        real_save = manager.long_term.save_turn
        failures = iter([BackendUnavailableError("long_term", url, "connection refused")])

        async def flaky(user_id: str, provenance: Any, candidates: Any, **kwargs: Any) -> Any:
            if candidates and (failure := next(failures, None)) is not None:
                raise failure  # the deferred save's first attempt: retried, and logged
            return await real_save(user_id, provenance, candidates, **kwargs)

        monkeypatch.setattr(manager.long_term, "save_turn", flaky)
        user, thread = unique("alice"), unique("t")
        await memory_graph(manager).ainvoke(
            {"messages": [("user", "I like tea.")]}, turn_config(user, thread)
        )
        await manager.flush()
        assert manager.metrics.snapshot()["retries"] == 1
        assert len(await manager.long_term.list_facts(user)) == 1
    logger = get_logger("memory_tiers.session.expiry")
    logger.warning("connecting to %s", url)
    logger.warning(f"dict args: %(url)s and {url}", {"url": url})
    try:
        raise BackendUnavailableError("session", f"redis://:{SECRET}@cache:6379/0", "timeout")
    except BackendUnavailableError:
        logger.exception("sweep failed")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(user_id)s %(message)s"))
    for record in captured:
        handler.handle(record)
    text = stream.getvalue()
    assert "retrying" in text and "sweep failed" in text and "Traceback" in text
    assert SECRET not in text
    assert text.count("app:***@db.internal") == 4 and ":***@cache" in text


class LeakyExtractor:
    def extract(self, messages: Any, context: Any) -> list[Any]:
        raise RuntimeError(f"cannot reach redis://app:{SECRET}@cache:6379/0")


async def test_a_password_inside_a_logged_problem_or_container_is_masked(tmp_path, captured):
    # Deferred learning logs each extractor problem, a dict whose text holds the error message.
    config = {"data_dir": str(tmp_path), "long_term": {"extraction": {"mode": "deferred", "debounce": 0.01}}}
    async with MemoryManager(config) as manager:
        manager.extractors.append(LeakyExtractor())
        await memory_graph(manager).ainvoke(
            {"messages": [("user", "I like tea.")]}, turn_config(unique("alice"), unique("t"))
        )
        await manager.flush()
    get_logger("memory_tiers.session.expiry").warning("tried %s", [f"redis://:{SECRET}@cache:6379/0"])
    lines = [record.getMessage() for record in captured]
    assert any("deferred learning for thread" in line for line in lines)
    assert any(line.startswith("tried ") for line in lines)
    assert not [line for line in lines if SECRET in line]


async def test_background_sweeps_do_not_inherit_the_ids_of_the_code_that_opened_the_manager(
    tmp_path, captured
):
    # A server that opens the manager lazily, inside the first request's turn: its sweepers
    # run for the whole process, not for that user.
    manager = MemoryManager({"data_dir": str(tmp_path), "session": {"sweep_interval": "10ms"}})
    with bind_ids("alice", "t1", "s1"):
        await manager.__aenter__()
    try:
        for _ in range(500):  # bounded: a sweep every 10 ms
            if any(r.getMessage().startswith("session sweep:") for r in captured):
                break
            await asyncio.sleep(0.01)
    finally:
        await manager.__aexit__(None, None, None)
    sweeps = [r for r in captured if r.getMessage().startswith("session sweep:")]
    assert sweeps and all((r.user_id, r.thread_id, r.session_id) == (None, None, None) for r in sweeps)


async def test_without_an_sdk_everything_runs_on_the_no_op(memory_config):
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing global set
    user, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        await memory_graph(manager).ainvoke(
            {"messages": [("user", "I like tea.")]}, turn_config(user, thread)
        )
        with manager.telemetry.span("memory_tiers.test.noop", "test", "noop") as span:
            assert not span.is_recording()
        assert manager.metrics.snapshot()["loads"] == 1


def test_every_module_logs_through_the_filtered_helper():
    """A module using logging.getLogger directly would emit records without the ids or masking."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "memory_tiers").rglob("*.py")
        if path.parent.name != "observability" and re.search(r"logging\.getLogger\(", path.read_text())
    ]
    assert offenders == []
