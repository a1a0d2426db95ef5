"""``memory-tiers state migrate``: bring every thread to the configured state version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from memory_tiers.cli.common import FAILED_EXIT_CODE, build_config, config_options, progress_bar
from memory_tiers.config import MemoryTiersConfig
from memory_tiers.long_term.profile_migration import ProfileMigrationReport
from memory_tiers.manager import MemoryManager
from memory_tiers.state.bulk import DEFAULT_CONCURRENCY, MigrationReport, count_threads


async def run_migration(
    cfg: MemoryTiersConfig,
    *,
    dry_run: bool,
    user_id: str | None,
    batch_size: int,
    concurrency: int,
    console: Console,
) -> tuple[MigrationReport, ProfileMigrationReport | None]:
    """Migrate threads, then profiles (all users' unless ``user_id``), with progress bars."""
    async with MemoryManager(cfg) as manager:
        total = await count_threads(manager.long_term_store, user_id)
        with progress_bar(console) as progress:
            task = progress.add_task("threads", total=total)
            threads = await manager.migrate_threads(
                user_id=user_id,
                dry_run=dry_run,
                batch_size=batch_size,
                concurrency=concurrency,
                progress=lambda n: progress.advance(task, n),
            )
            if user_id is not None:
                return threads, None
            task = progress.add_task("profiles", total=None)
            profiles = await manager.long_term.migrate_profiles(
                dry_run=dry_run, batch_size=batch_size, progress=lambda n: progress.advance(task, n)
            )
        return threads, profiles


def report_table(report: MigrationReport | ProfileMigrationReport, current_version: int, what: str) -> Table:
    """Threads (or profiles) per schema version, before and after."""
    after_title = "after (dry run: would be)" if report.dry_run else "after"
    table = Table(show_header=True, header_style="bold", title=f"{what} per schema version")
    table.add_column("version", justify="right")
    table.add_column("before", justify="right")
    table.add_column(after_title, justify="right")
    for version in sorted(set(report.before) | set(report.after)):
        label = f"{version} (current)" if version == current_version else str(version)
        table.add_row(label, str(report.before[version]), str(report.after[version]))
    return table


@click.group("state")
def state_group() -> None:
    """Versioned graph state and profiles: migrate old threads and profile documents."""


@state_group.command("migrate")
@config_options
@click.option("--dry-run", is_flag=True, help="Run the migrations in memory and report; write nothing.")
@click.option("--user", "user_id", default=None, help="Only this user's threads.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Threads migrated at once.",
)
def migrate(
    config_file: Path | None,
    data_dir: Path | None,
    dry_run: bool,
    user_id: str | None,
    batch_size: int,
    concurrency: int,
) -> None:
    """Bring every registered thread to `state.version` (with `state.migrators`), then every
    profile to `long_term.profile.version` (with `long_term.profile.migrators`).

    Each thread or profile is migrated all-or-nothing; failures are listed and leave theirs as
    they were (exit code 1). Running it again resumes where it stopped. With --user, only that
    user's threads.
    """
    cfg = build_config(config_file, data_dir)
    console = Console()
    threads, profiles = asyncio.run(
        run_migration(
            cfg,
            dry_run=dry_run,
            user_id=user_id,
            batch_size=batch_size,
            concurrency=concurrency,
            console=console,
        )
    )
    verb = "would migrate" if dry_run else "migrated"
    console.print(report_table(threads, cfg.state.version, "threads"))
    console.print(f"{verb} {threads.migrated} thread(s) to version {cfg.state.version}", soft_wrap=True)
    failed = dict(threads.failed)
    if profiles is not None:
        version = cfg.long_term.profile.version
        console.print(report_table(profiles, version, "profiles"))
        console.print(f"{verb} {profiles.migrated} profile(s) to version {version}", soft_wrap=True)
        failed |= {f"profile of {user}": error for user, error in profiles.failed.items()}
    if failed:
        failures = Table(show_header=True, header_style="bold red", title="failed (left unchanged)")
        failures.add_column("what", no_wrap=True)
        failures.add_column("error", overflow="fold")
        for subject, error in failed.items():
            failures.add_row(subject, error)
        console.print(failures)
        raise SystemExit(FAILED_EXIT_CODE)
