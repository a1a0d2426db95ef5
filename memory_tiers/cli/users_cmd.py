"""``memory-tiers users export|forget``: a user's data-rights requests across the three tiers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memory_tiers.cli.common import (
    build_config,
    config_options,
    confirm,
    dump_json,
    emit,
    id_option,
    json_option,
    plain,
    run_with_manager,
    table,
    yes_option,
)
from memory_tiers.ids import validate_id

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager
    from memory_tiers.users import ForgetReport


@click.group("users")
def users_group() -> None:
    """Everything held about a user: export it, or forget the user in every tier."""


@users_group.command("export")
@config_options
@id_option("user")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON to FILE instead of stdout.",
)
def export(config_file: Path | None, data_dir: Path | None, user_id: str, output: Path | None) -> None:
    """Write everything the three tiers hold about the user as JSON (see docs/users.md)."""

    async def run(manager: MemoryManager) -> dict[str, Any]:
        return await manager.users.export(user_id)

    text = dump_json(run_with_manager(build_config(config_file, data_dir), run))
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    click.echo(f"wrote the export of user {user_id!r} to {output}", err=True)


@users_group.command("forget")
@config_options
@id_option("user")
@yes_option
@json_option
def forget(config_file: Path | None, data_dir: Path | None, user_id: str, yes: bool, as_json: bool) -> None:
    """Delete everything the three tiers hold about the user (asks first; cannot be undone).
    Other users are untouched; forgetting a user already forgotten finds nothing."""
    cfg = build_config(config_file, data_dir)
    validate_id("user_id", user_id)  # a malformed id fails before the question
    confirm(
        f"Forget user {user_id!r}: delete their checkpoints, sessions, profile, facts and archives? "
        "This cannot be undone.",
        yes=yes,
    )

    async def run(manager: MemoryManager) -> ForgetReport:
        return await manager.users.forget(user_id)

    report = run_with_manager(cfg, run)

    def render() -> Iterator[Any]:
        rows: list[tuple[str, str, int]] = [
            ("working", "threads (all their checkpoints)", report.threads),
            ("working", "turns waiting for deferred learning", report.deferred_turns),
            ("session", "session keys and claims", report.sessions),
        ]
        rows += [("long-term", name, count) for name, count in sorted(report.long_term.items())]
        yield table("tier", "what", "deleted", rows=rows, title=f"forgot user {user_id}")
        if not report.found_anything:
            yield f"nothing was held about user {user_id!r}"

    emit({**plain(report), "found_anything": report.found_anything}, as_json, render)
