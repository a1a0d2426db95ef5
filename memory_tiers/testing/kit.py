"""What the conformance kits share: calling a plugin on a case, collecting failures, sync use.

A kit runs a plugin's method on sample and hostile conversations. Each case is run by
`check_case`: the result must validate, come within the time limit and leave the messages as
they were; when the plugin promises it, the same input again must give the same result.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

from memory_tiers.errors import UsageError
from memory_tiers.plugins import maybe_await
from memory_tiers.testing.cases import Sample, as_conversations, hostile_cases

_DETAIL_LIMIT = 300

Validate = Callable[[Any, list[BaseMessage]], tuple[Any, str | None]]
"""``(result, messages) -> (valid value, None)`` or ``(None, what is wrong)``."""


def shorten(text: str, limit: int = _DETAIL_LIMIT) -> str:
    """``text``, cut to ``limit`` characters with ``...`` so that a failure stays readable."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class CheckReport:
    """The failed checks of one kit run, each as ``check (case): what happened``."""

    failures: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, check: str, case: str | None, detail: str) -> None:
        """Record that ``check`` failed on ``case`` (None: on the object as a whole)."""
        where = f"{check} ({case})" if case else check
        self.failures.append((check, f"{where}: {shorten(detail)}"))

    def raise_failures(self, name: str, kit: str) -> None:
        """Raise `AssertionError` listing every failure, if there are any.

        Example:
            >>> report = CheckReport()
            >>> report.fail("valid_output", "sample 1", "returned None")
            >>> report.raise_failures("Broken", "summarizer")
            Traceback (most recent call last):
            ...
            AssertionError: Broken failed 1 summarizer conformance check (valid_output):
              - valid_output (sample 1): returned None
        """
        if not self.failures:
            return
        failed = sorted({check for check, _ in self.failures})
        lines = "\n".join(f"  - {line}" for _, line in self.failures)
        raise AssertionError(
            f"{name} failed {len(failed)} {kit} conformance check{'s' if len(failed) > 1 else ''} "
            f"({', '.join(failed)}):\n{lines}"
        )


@dataclass(frozen=True)
class PluginCall:
    """How a kit calls the plugin under test and judges one result."""

    method: Callable[[list[BaseMessage], Any], Any]
    """The plugin's bound method, sync or async, called as ``method(messages, context)``."""
    context: Any
    validate: Validate
    fingerprint: Callable[[Any], Any]
    """What must be equal between two runs on the same input."""
    repeat_check: str | None
    """The name of the same-result-twice check (``idempotent``); None runs each case once."""
    what: str
    """What the results are, for messages ("facts")."""
    time_limit: float


@dataclass
class _Outcome:
    value: Any = None
    problem: str | None = None
    seconds: float = 0.0


async def _call(plugin: PluginCall, messages: list[BaseMessage]) -> _Outcome:
    start = time.perf_counter()
    try:
        result = await maybe_await(plugin.method(messages, plugin.context))
    except Exception as exc:
        return _Outcome(problem=f"raised {type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    value, problem = plugin.validate(result, messages)
    return _Outcome(value, problem, time.perf_counter() - start)


def _snapshot(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [message.model_dump() for message in messages]


async def check_case(
    report: CheckReport, plugin: PluginCall, check: str, label: str, messages: list[BaseMessage]
) -> None:
    """One case: valid output, within the time limit, unchanged input, the same result again."""
    case = label if check == "valid_output" else f"{check}: {label}"
    again = copy.deepcopy(messages)
    before = _snapshot(messages)
    first = await _call(plugin, messages)
    if first.problem:
        report.fail(check, label, first.problem)
        return
    if first.seconds > plugin.time_limit:
        report.fail("time_limit", case, f"took {first.seconds:.1f} s, limit {plugin.time_limit:.1f} s")
    if _snapshot(messages) != before:
        report.fail("does_not_mutate_input", case, "the messages passed in were changed")
    if plugin.repeat_check is None:
        return
    second = await _call(plugin, again)
    if second.problem:
        report.fail(plugin.repeat_check, case, f"the second call {second.problem}")
        return
    one, two = plugin.fingerprint(first.value), plugin.fingerprint(second.value)
    if one != two:
        report.fail(
            plugin.repeat_check,
            case,
            f"the same input gave different {plugin.what}: first {shorten(str(one), 120)}, "
            f"then {shorten(str(two), 120)}",
        )


async def check_cases(
    report: CheckReport,
    plugin: PluginCall,
    samples: Sequence[Sample] | None,
    extra_cases: Sequence[tuple[str, str, list[BaseMessage]]] = (),
) -> None:
    """Every case of a kit: the samples (``valid_output``), ``extra_cases``, then `hostile_cases`."""
    for number, messages in enumerate(as_conversations(samples), start=1):
        await check_case(report, plugin, "valid_output", f"sample {number}", messages)
    for check, label, messages in [*extra_cases, *hostile_cases()]:
        await check_case(report, plugin, check, label, messages)


def run_check_sync(check: Coroutine[Any, Any, None], name: str) -> None:
    """Run the kit coroutine ``check`` (from the async function ``name``) in a new event loop.

    Raises:
        UsageError: called from a running event loop, where ``name`` must be awaited instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        check.close()
        raise UsageError(f"{name}_sync was called on a running event loop: await {name}")
    asyncio.run(check)
