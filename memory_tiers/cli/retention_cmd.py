"""``memory-tiers retention run [--dry-run]``: apply ``working.retention`` to every thread."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from memory_tiers.cli.common import (
    FAILED_EXIT_CODE,
    build_config,
    config_options,
    confirm,
    emit,
    json_option,
    progress_bar,
    run_with_manager,
    table,
    yes_option,
)
from memory_tiers.config import RetentionConfig, RetentionRule

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager
    from memory_tiers.retention import RetentionReport


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _rule_row(scope: str, rule: RetentionRule) -> list[Any]:
    idle = "never" if rule.max_idle is None else f"{_duration(rule.max_idle)}: {rule.on_idle}"
    return [scope, rule.keep_last or "all", idle]


def policy_rows(config: RetentionConfig) -> list[list[Any]]:
    """One row per scope: the defaults, then each namespace override in effect."""
    default = "every other namespace" if config.namespaces else "every thread"
    rows = [_rule_row(default, config.rule_for(None))]
    rows += [_rule_row(f"namespace {ns}", config.rule_for(ns)) for ns in sorted(config.namespaces)]
    return rows


def _has_policy(config: RetentionConfig) -> bool:
    rules = [config.rule_for(None), *(config.rule_for(ns) for ns in config.namespaces)]
    return any(rule.keep_last is not None or rule.max_idle is not None for rule in rules)


@click.group("retention")
def retention_group() -> None:
    """Retention of working memory: prune old checkpoints, expire idle threads."""


@retention_group.command("run")
@config_options
@click.option("--dry-run", is_flag=True, help="Count what would be done; write nothing.")
@yes_option
@json_option
def run(config_file: Path | None, data_dir: Path | None, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Apply `working.retention` once to every registered thread: idle threads are archived or
    deleted, the others keep their newest `keep_last` checkpoints (and every older one those
    need); then expired sessions are archived. Asks first unless --dry-run or --yes. Threads
    that fail are listed and left as they were (exit code 1); running it again resumes."""
    cfg = build_config(config_file, data_dir)
    policy = cfg.working.retention
    columns = ("threads", "keep last checkpoints", "when idle for")
    if not dry_run and _has_policy(policy):  # with no policy there is nothing to confirm
        if not as_json and not yes:
            Console(stderr=True).print(table(*columns, rows=policy_rows(policy), title="retention policy"))
        confirm("Apply this retention policy now (archive, delete and prune as shown)?", yes=yes)

    async def apply(manager: MemoryManager) -> RetentionReport:
        if as_json:
            return await manager.retention.run(dry_run=dry_run)
        with progress_bar(Console()) as progress:
            task = progress.add_task("threads", total=None)
            return await manager.retention.run(dry_run=dry_run, progress=lambda n: progress.advance(task, n))

    report = run_with_manager(cfg, apply)

    def render() -> Iterator[Any]:
        if not _has_policy(policy):
            yield "no retention policy is configured (working.retention): no thread is pruned or expired"
        yield table(*columns, rows=policy_rows(policy), title="retention policy")
        counts = [
            ("idle threads archived", report.archived),
            ("idle threads deleted", report.deleted),
            ("threads pruned", report.pruned_threads),
            ("checkpoints pruned", report.pruned_checkpoints),
            ("threads failed", len(report.failed)),
            # The session sweep is not simulated: a dry run archives nothing and counts nothing.
            ("expired sessions archived", None if dry_run else report.sessions_archived),
        ]
        yield table("what", "would be" if dry_run else "done", rows=counts, title="retention run")
        if report.failed:
            yield table("thread", "error", rows=report.failed.items(), title="failed (left as they were)")

    emit(report, as_json, render)
    if report.failed:
        raise SystemExit(FAILED_EXIT_CODE)
