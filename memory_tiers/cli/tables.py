"""Rich rendering helpers: where each tier lives and what it holds after a turn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from memory_tiers.config import MemoryTiersConfig
from memory_tiers.config_values import mask_url
from memory_tiers.long_term.engine import long_term_url
from memory_tiers.working.checkpointer import sqlite_path

if TYPE_CHECKING:
    from memory_tiers.cli.demo import TurnRecord


_FACT_ORDER = {name: i for i, name in enumerate(["name", "location", "likes", "dislikes", "preference"])}


def session_is_embedded(cfg: MemoryTiersConfig) -> bool:
    """Whether sessions live in the in-process fakeredis (gone when the process exits)."""
    return cfg.session.url.get_secret_value().startswith("memory://")


def describe_working(cfg: MemoryTiersConfig) -> str:
    """Where the working tier (the checkpointer) keeps its data."""
    working = cfg.working
    if working.backend == "memory":
        return "memory (in-process, lost at exit)"
    if working.backend == "sqlite":
        return f"sqlite {sqlite_path(working, cfg.data_dir)}"
    assert working.url is not None
    return f"{working.backend} {mask_url(working.url.get_secret_value())}"


def describe_session(cfg: MemoryTiersConfig) -> str:
    """Where the session tier keeps its data."""
    if session_is_embedded(cfg):
        return "in-process fakeredis (starts empty in every run)"
    return f"redis {mask_url(cfg.session.url.get_secret_value())} (prefix {cfg.session.key_prefix})"


def describe_long_term(cfg: MemoryTiersConfig) -> str:
    """Where the long-term tier keeps its data."""
    return mask_url(long_term_url(cfg.long_term, cfg.data_dir))


def setup_table(cfg: MemoryTiersConfig) -> Table:
    """The three tiers and their backends."""
    table = Table(title="Memory tiers", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold cyan")
    table.add_column(overflow="fold")
    table.add_row("working", escape(describe_working(cfg)))
    table.add_row("session", escape(f"{describe_session(cfg)}, ttl {cfg.session.ttl.total_seconds():g}s"))
    table.add_row("long-term", escape(describe_long_term(cfg)))
    return table


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_value(value)}" for key, value in values.items()) or "(empty)"


def format_facts(facts: list[dict[str, Any]]) -> str:
    """Facts as ``attribute: value`` items, grouped by attribute."""
    grouped: dict[str, list[str]] = {}
    for fact in sorted(facts, key=lambda f: _FACT_ORDER.get(str(f["attribute"]), len(_FACT_ORDER))):
        grouped.setdefault(str(fact["attribute"]), []).append(str(fact["value"]))
    return "; ".join(f"{key}: {', '.join(values)}" for key, values in grouped.items()) or "(none)"


def turn_table(record: TurnRecord) -> Table:
    """What each tier holds right after one turn."""
    table = Table(
        title=f"after {record.user}'s turn {record.turn}",
        title_justify="left",
        title_style="dim",
        show_header=True,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
    )
    table.add_column("tier", style="bold cyan", no_wrap=True)
    table.add_column("key", style="dim", no_wrap=True)
    table.add_column("holds", overflow="fold")
    table.add_row(
        "working",
        escape(record.thread_id),
        f"{record.thread_messages} messages, {record.checkpoints} checkpoints",
    )
    ttl = "expired" if record.session_ttl is None else f"expires in {record.session_ttl}s"
    table.add_row("session", escape(record.session_id), escape(f"{_pairs(record.session)} ({ttl})"))
    table.add_row(
        "long-term",
        "profile",
        escape(f"v{record.profile_version}: {_pairs(record.profile)}"),
    )
    table.add_row("", "facts", escape(format_facts(record.facts)))
    return table
