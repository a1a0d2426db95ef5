"""``memory-tiers sessions list|show|end|sweep``: a user's live sessions in the session tier.

With the embedded session tier (an in-process fakeredis) every command starts from an empty
tier, so these commands are for a Redis ``session.url``; they say so on stderr otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memory_tiers.cli.common import (
    build_config,
    config_options,
    confirm,
    emit,
    fields_table,
    id_option,
    json_option,
    run_with_manager,
    table,
    yes_option,
)
from memory_tiers.cli.tables import session_is_embedded
from memory_tiers.config import MemoryTiersConfig

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

EMBEDDED_NOTE = (
    "note: session.url is memory:// (an in-process fakeredis), so the session tier starts empty "
    "in every command; point session.url at your Redis"
)


def _config(config_file: Path | None, data_dir: Path | None) -> MemoryTiersConfig:
    cfg = build_config(config_file, data_dir)
    if session_is_embedded(cfg):
        click.echo(EMBEDDED_NOTE, err=True)
    return cfg


@click.group("sessions")
def sessions_group() -> None:
    """A user's live sessions: list, show, end (archive to long-term), sweep expired ones."""


@sessions_group.command("list")
@config_options
@id_option("user")
@json_option
def list_sessions(config_file: Path | None, data_dir: Path | None, user_id: str, as_json: bool) -> None:
    """List the user's live sessions, most recently active first (no TTL is refreshed)."""

    async def run(manager: MemoryManager) -> list[dict[str, Any]]:
        ids = await manager.sessions.list(user_id)
        store = manager.session_store
        return [{"session_id": sid, "ttl_seconds": await store.ttl(user_id, sid)} for sid in ids]

    sessions = run_with_manager(_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        if not sessions:
            yield f"user {user_id!r} has no live sessions"
            return
        rows = [(s["session_id"], s["ttl_seconds"]) for s in sessions]
        yield table("session_id", "expires in (s)", rows=rows, title=f"live sessions of {user_id}")

    emit({"user_id": user_id, "sessions": sessions}, as_json, render)


@sessions_group.command("show")
@config_options
@id_option("user")
@id_option("session")
@json_option
def show(
    config_file: Path | None, data_dir: Path | None, user_id: str, session_id: str, as_json: bool
) -> None:
    """Show a live session's context. Reading it refreshes a sliding TTL, as any read does."""

    async def run(manager: MemoryManager) -> dict[str, Any]:
        record = await manager.sessions.get(user_id, session_id)
        return {
            "user_id": record.user_id,
            "session_id": record.session_id,
            "updated_at": datetime.fromtimestamp(record.updated_at, UTC),
            "ttl_seconds": await manager.session_store.ttl(user_id, session_id),
            "data": record.data,
        }

    session = run_with_manager(_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        header = {key: value for key, value in session.items() if key != "data"}
        yield fields_table(header, title=f"session {session_id}")
        yield table("key", "value", rows=session["data"].items(), title="context")

    emit(session, as_json, render)


@sessions_group.command("end")
@config_options
@id_option("user")
@id_option("session")
@yes_option
@json_option
def end(
    config_file: Path | None, data_dir: Path | None, user_id: str, session_id: str, yes: bool, as_json: bool
) -> None:
    """Archive a session's context to long-term memory, then delete it (asks first)."""

    async def run(manager: MemoryManager) -> str:
        await manager.sessions.get(user_id, session_id)  # owner check (and exists) before asking
        confirm(
            f"End session {session_id!r} of user {user_id!r}: archive its context and delete it?",
            yes=yes,
        )
        return await manager.sessions.end(user_id, session_id)

    archive_id = run_with_manager(_config(config_file, data_dir), run)
    emit(
        {"user_id": user_id, "session_id": session_id, "archive_id": archive_id},
        as_json,
        lambda: [f"ended session {session_id} of user {user_id}; its context is archive {archive_id}"],
    )


@sessions_group.command("sweep")
@config_options
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1), help="At most N entries.")
@json_option
def sweep(config_file: Path | None, data_dir: Path | None, limit: int, as_json: bool) -> None:
    """Archive the sessions that expired since the last sweep (what the manager does every
    `session.sweep_interval`; safe to run beside it)."""

    async def run(manager: MemoryManager) -> int:
        return await manager.sessions.sweep(limit=limit)

    archived = run_with_manager(_config(config_file, data_dir), run)
    emit({"archived": archived}, as_json, lambda: [f"archived {archived} expired session(s)"])
