"""LangGraph's checkpointer conformance suite against what `MemoryManager` hands out.

The saver under test is exactly ``manager.checkpointer`` (the ownership guard around LangGraph's
saver) of a manager opened on each working backend. The conformance configs name no user, so
the guard passes every call through; what is tested is that wrapping loses nothing: every base
capability and every extended capability the backend's own saver implements must pass.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import (
    BASE_CAPABILITIES,
    Capability,
    DetectedCapabilities,
)
from langgraph.checkpoint.conformance.report import CapabilityReport, ProgressCallbacks
from services import temporary_database

from memory_tiers import MemoryManager

BASE = {cap.value for cap in BASE_CAPABILITIES}

# Extended capabilities LangGraph's own saver implements for each backend (checked below
# against capability detection on the raw saver, so a new upstream capability is noticed).
EXTENDED: dict[str, set[str]] = {
    "memory": set(),
    "sqlite": set(),
    "postgres": {Capability.PRUNE.value},
    "redis": {Capability.PRUNE.value},
}

# Conformance tests that LangGraph's own saver fails on its own, with ``manager.checkpointer``
# wrapping it or not (the test proves that by running the raw saver too): they are tolerated
# test by test, so the rest of their capability still has to pass. Seen with
# langgraph-checkpoint-redis 0.5.2, AsyncRedisSaver (langgraph/checkpoint/redis/aio.py):
_REDIS_ROOT_NS = "alist/aprune treat checkpoint_ns '' as falsy and so match every namespace"
_REDIS_BEFORE = "alist parses `before` as a ULID; LangGraph's uuid6 ids are not, so it is ignored"
UPSTREAM_FAILURES: dict[str, dict[str, str]] = {
    "memory": {},
    "sqlite": {},
    "postgres": {},
    "redis": {
        "test_list_by_namespace": _REDIS_ROOT_NS,
        "test_list_multiple_namespaces": _REDIS_ROOT_NS,
        "test_prune_keep_latest_across_namespaces": _REDIS_ROOT_NS,
        "test_list_before": _REDIS_BEFORE,
        "test_list_limit_plus_before": _REDIS_BEFORE,
        "test_list_metadata_custom_keys": "alist filters only on source/step/thread_id/run_id: "
        "ValueError('Unsupported filter key: score')",
        "test_prune_empty_list_noop": "aprune([]) raises ValueError('``thread_ids`` must be a "
        "non-empty sequence') instead of doing nothing",
    },
}

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis-stack", marks=pytest.mark.redis_stack),
]


def _config_factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[ExitStack], dict[str, Any]]:
    """A function returning the config of a fresh manager (fresh storage where possible)."""
    counter = itertools.count()
    server_url = {
        "postgres": lambda: request.getfixturevalue("postgres_server_url"),
        "redis": lambda: request.getfixturevalue("redis_stack_url"),
    }.get(backend, lambda: None)()

    def make(stack: ExitStack) -> dict[str, Any]:
        data_dir = tmp_path / f"run{next(counter)}"
        data_dir.mkdir()
        working: dict[str, Any] = {"backend": backend}
        if backend == "postgres":
            # A new database per factory call: each capability suite starts empty.
            working["url"] = stack.enter_context(temporary_database(server_url))
        elif backend == "redis":
            # The Redis saver's key names are fixed, so suites share the private server; every
            # conformance test uses its own random thread ids.
            working["url"] = server_url
        return {
            "data_dir": str(data_dir),
            "working": working,
            "session": {"url": "memory://"},
            "long_term": {"url": f"sqlite+aiosqlite:///{data_dir / 'long_term.db'}"},
        }

    return make


def _failures(report: CapabilityReport, capabilities: set[str]) -> dict[str, str]:
    """Failing conformance tests by name (``"test_x": "capability: error"``).

    A capability that was not detected or did not run counts as a failure under its own name.
    """
    failed: dict[str, str] = {}
    for cap in sorted(capabilities):
        result = report.results.get(cap)
        if result is None or not result.detected:
            failed[cap] = f"{cap}: not detected on the saver"
        elif result.passed is not True and not result.failures:
            failed[cap] = f"{cap}: did not run"
        for failure in result.failures if result else []:
            name, _, error = failure.partition(": ")
            failed[name] = f"{cap}: {error}"
    return failed


def _describe(failed: dict[str, str], names: set[str]) -> str:
    return "\n".join(f"  {name} ({failed[name]})" for name in sorted(names))


async def _run(
    name: str,
    make_config: Callable[[ExitStack], dict[str, Any]],
    capabilities: set[str],
    pick: Callable[[MemoryManager], BaseCheckpointSaver[Any]],
    seen: list[BaseCheckpointSaver[Any]],
) -> CapabilityReport:
    """Run the conformance suites on ``pick(manager)`` of a fresh manager per suite."""

    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        with ExitStack() as stack:  # drops the postgres database after the manager closed
            async with MemoryManager(make_config(stack)) as manager:
                saver = pick(manager)
                seen.append(saver)
                yield saver

    report = await validate(factory, capabilities=capabilities, progress=ProgressCallbacks.verbose())
    report.print_report()
    return report


@pytest.mark.parametrize("backend", BACKENDS)
async def test_manager_checkpointer_conforms(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``manager.checkpointer`` passes the base suite and the backend's extended capabilities."""
    capabilities = BASE | EXTENDED[backend]
    make_config = _config_factory(backend, request, tmp_path)
    known = UPSTREAM_FAILURES[backend]
    seen: list[BaseCheckpointSaver[Any]] = []
    report = await _run(f"memory_tiers[{backend}]", make_config, capabilities, lambda m: m.checkpointer, seen)

    failed = _failures(report, capabilities)
    unexpected = set(failed) - set(known)
    assert not unexpected, (
        f"manager.checkpointer on {backend} failed {len(unexpected)} conformance test(s):\n"
        + _describe(failed, unexpected)
    )
    assert len(seen) == len(capabilities), "the factory must run once per capability suite"

    # The guard exposes exactly the capabilities of the saver it wraps: none lost, none invented.
    guarded = seen[0]
    inner = guarded.inner  # type: ignore[attr-defined]
    assert type(guarded).__name__.startswith("OwnershipGuarded")
    detected_inner = {c.value for c in DetectedCapabilities.from_instance(inner).detected}
    detected_guarded = {c.value for c in DetectedCapabilities.from_instance(guarded).detected}
    assert detected_guarded == detected_inner
    assert detected_inner == BASE | EXTENDED[backend], (
        f"LangGraph's {type(inner).__name__} now implements {sorted(detected_inner - BASE)}: update EXTENDED"
    )

    if known:
        # Tolerated failures must be LangGraph's own: the raw saver fails exactly the same tests.
        raw = await _run(
            f"{type(inner).__name__}[{backend}]",
            make_config,
            capabilities,
            lambda m: m.checkpointer.inner,
            [],
        )
        raw_failed = _failures(raw, capabilities)
        assert set(raw_failed) == set(failed), (
            f"manager.checkpointer and the raw {type(inner).__name__} fail different tests:\n"
            f" only wrapped:\n{_describe(failed, set(failed) - set(raw_failed))}\n"
            f" only raw:\n{_describe(raw_failed, set(raw_failed) - set(failed))}"
        )
        fixed = set(known) - set(failed)
        assert not fixed, (
            f"upstream now passes {sorted(fixed)} on {backend}: remove them from UPSTREAM_FAILURES"
        )
