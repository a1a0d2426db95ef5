"""Shared CLI plumbing: the options every command takes, how they become a `MemoryTiersConfig`,
running a coroutine on an open manager, confirmations, and output as rich tables or JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from memory_tiers.config import MemoryTiersConfig, load_config, load_yaml
from memory_tiers.jsonable import to_json

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

FAILED_EXIT_CODE = 1
"""Exit code of a command that ran but found failures (threads left unmigrated, failed checks)."""


def config_options(func: F) -> F:
    """Add ``--config FILE`` and ``--data-dir DIR`` to a command."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the embedded backends keep their files (overrides data_dir).",
    )(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A memory_tiers YAML file (default: the embedded defaults).",
    )(func)
    return func


def build_config(config_file: Path | None, data_dir: Path | None) -> MemoryTiersConfig:
    """The config from ``config_file`` (or the defaults), with ``data_dir`` overridden if given.

    Raises:
        ConfigError: the file is unreadable, not YAML or not a valid configuration.
    """
    cfg = load_yaml(config_file) if config_file is not None else load_config(None)
    if data_dir is not None:
        cfg = cfg.model_copy(update={"data_dir": data_dir})
    return cfg


def missing_sqlite_file(cfg: MemoryTiersConfig, tier: Literal["working", "long_term"]) -> Path | None:
    """The file of a tier configured on SQLite that does not exist yet (None otherwise), so
    read-only commands can say "not set up" instead of creating it by connecting."""
    from sqlalchemy.engine import make_url

    from memory_tiers.long_term.engine import long_term_url
    from memory_tiers.working.checkpointer import sqlite_path

    if tier == "working":
        if cfg.working.backend != "sqlite":
            return None
        path = sqlite_path(cfg.working, cfg.data_dir)
    else:
        url = make_url(long_term_url(cfg.long_term, cfg.data_dir))
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        path = Path(url.database)
    return None if path.exists() else path


# -- options ---------------------------------------------------------------------------


def id_option(name: str, help: str | None = None, *, required: bool = True) -> Callable[[F], F]:
    """``--NAME ID`` (the parameter ``NAME_id``): an identifier, passed through as given, since
    the library validates it."""
    dest = f"{name.replace('-', '_')}_id"
    return click.option(f"--{name}", dest, required=required, metavar="ID", help=help or f"The {name} id.")


def json_option(func: F) -> F:
    """Add ``--json``: print machine-readable JSON only, on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON only (no tables, no progress bar)."
    )(func)


def yes_option(func: F) -> F:
    """Add ``--yes`` to a destructive command: do not ask for confirmation."""
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(func)


def confirm(question: str, *, yes: bool) -> None:
    """Ask ``question`` on stderr (default No) unless ``yes``; a refusal aborts with exit code 1."""
    if not yes:
        click.confirm(question, default=False, abort=True, err=True)


# -- running ---------------------------------------------------------------------------


def run_with_manager(cfg: MemoryTiersConfig, operation: Callable[[Any], Awaitable[T]]) -> T:
    """Open a `MemoryManager` on ``cfg``, await ``operation(manager)`` and close it again."""
    from memory_tiers.manager import MemoryManager

    async def run() -> T:
        async with MemoryManager(cfg) as manager:
            return await operation(manager)

    return asyncio.run(run())


def progress_bar(console: Console) -> Progress:
    """The progress bar of long runs: description, bar, done/total (``?`` when unknown), time."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=False)


# -- output ----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON data: a dataclass becomes its fields (not `to_json`'s tagged form),
    anything else goes through `to_json` (messages as ``message_to_dict``, models dumped)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return to_json(value)


def dump_json(data: Any) -> str:
    """``data`` (see `plain`) as indented JSON text."""
    return json.dumps(plain(data), indent=2, ensure_ascii=False, allow_nan=False)


def emit(data: Any, as_json: bool, render: Callable[[], Iterable[RenderableType | str]]) -> None:
    """Print ``data`` as JSON (only that, on stdout), or what ``render()`` yields for humans."""
    if as_json:
        click.echo(dump_json(data))
        return
    console = Console()
    for item in render():
        if isinstance(item, str):  # a line of text, which may quote ids and values: no markup
            console.print(item, soft_wrap=True, markup=False)
        else:
            console.print(item)


def as_text(value: Any) -> str:
    """A value as table text: times in UTC to the second, containers as compact JSON, None as
    ``-``."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(plain(value), ensure_ascii=False) if value else "-"
    return str(value)


def table(*columns: str, rows: Iterable[Iterable[Any]], title: str | None = None) -> Table:
    """A table with a header; every value but a rich `Text` goes through `as_text`, markup
    escaped (values are data: a ``[bold]`` in a message is shown, not applied)."""
    out = Table(show_header=True, header_style="bold", title=title, title_justify="left")
    for i, name in enumerate(columns):
        # The first column names the row (an id): kept whole, the others fold.
        out.add_column(name, style="bold cyan" if i == 0 else None, overflow="fold", no_wrap=i == 0)
    for row in rows:
        out.add_row(*(value if isinstance(value, Text) else escape(as_text(value)) for value in row))
    return out


def fields_table(values: Mapping[str, Any], *, title: str | None = None) -> Table:
    """A two-column table of ``values``, one row a field."""
    return table("field", "value", rows=values.items(), title=title)
