"""``memory-tiers db upgrade|current``: create or migrate the schemas, show the revision."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from memory_tiers.cli.common import build_config, config_options, missing_sqlite_file
from memory_tiers.cli.tables import describe_long_term, describe_working
from memory_tiers.config import MemoryTiersConfig
from memory_tiers.long_term import migrate
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.working.checkpointer import open_checkpointer


@dataclass(frozen=True)
class Revisions:
    """The long-term schema revision before and after a command, and the newest known."""

    before: str | None
    after: str | None
    head: str


async def upgrade_all(cfg: MemoryTiersConfig) -> Revisions:
    """Migrate the long-term schema to head and run the checkpointer's own setup."""
    async with LongTermStore.open(cfg.long_term, cfg.data_dir) as store:
        before = await store.schema_revision()
        await store.upgrade_schema()
        after = await store.schema_revision()
    async with open_checkpointer(cfg.working, cfg.data_dir, setup=True):
        pass
    return Revisions(before, after, migrate.head_revision())


async def current(cfg: MemoryTiersConfig) -> Revisions:
    """The long-term schema revision, without creating anything."""
    if missing_sqlite_file(cfg, "long_term") is not None:
        revision = None
    else:
        async with LongTermStore.open(cfg.long_term, cfg.data_dir) as store:
            revision = await store.schema_revision()
    return Revisions(revision, revision, migrate.head_revision())


def _status(revision: str | None, head: str) -> str:
    if revision == head:
        return "[green]up to date[/]"
    if revision is None:
        return "[yellow]not set up[/]: run `memory-tiers db upgrade`"
    return "[yellow]behind[/]: run `memory-tiers db upgrade`"


def _table(*revision_columns: str) -> Table:
    table = Table(show_header=True, header_style="bold")
    table.add_column("tier", style="bold cyan", no_wrap=True)
    table.add_column("where", overflow="fold", ratio=1)
    for name in revision_columns:
        table.add_column(name, no_wrap=True)
    return table


@click.group("db")
def db_group() -> None:
    """Create, migrate and inspect the database schemas."""


@db_group.command("upgrade")
@config_options
def upgrade(config_file: Path | None, data_dir: Path | None) -> None:
    """Create or migrate every tier's schema (needed with `setup: manual`; idempotent)."""
    cfg = build_config(config_file, data_dir)
    revisions = asyncio.run(upgrade_all(cfg))
    table = _table("before", "after", "head")
    table.add_row(
        "long-term",
        describe_long_term(cfg),
        revisions.before or "none",
        revisions.after or "none",
        revisions.head,
    )
    working = "in-process" if cfg.working.backend == "memory" else "set up"
    table.add_row("working", describe_working(cfg), "", working, "")
    console = Console()
    console.print(table)
    console.print(
        f"long-term schema: {revisions.before or 'none'} -> {revisions.after} (head {revisions.head})"
    )


@db_group.command("current")
@config_options
def show_current(config_file: Path | None, data_dir: Path | None) -> None:
    """Show the long-term schema revision and the newest one this version knows.

    The working tier's tables are versioned by the LangGraph saver itself; `db upgrade` runs
    its setup.
    """
    cfg = build_config(config_file, data_dir)
    revisions = asyncio.run(current(cfg))
    table = _table("current", "head")
    table.add_row("long-term", describe_long_term(cfg), revisions.after or "none", revisions.head)
    console = Console()
    console.print(table)
    console.print(
        f"long-term schema: current {revisions.after or 'none'}, head {revisions.head}: "
        f"{_status(revisions.after, revisions.head)}",
        soft_wrap=True,
    )
