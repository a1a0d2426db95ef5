"""``memory-tiers threads list|show|history|fork|archive|delete``: a user's threads.

Every command names the user; the library checks that the thread is theirs (exit code 2
otherwise, with nothing read or written).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from langchain_core.messages import BaseMessage

from memory_tiers.cli.common import (
    as_text,
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
from memory_tiers.errors import NotFoundError
from memory_tiers.long_term.models import ThreadRecord

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

# Registry fields shown in `threads list`, and their column headers.
_RECORD_COLUMNS = {
    "thread_id": "thread",
    "status": "status",
    "namespace": "namespace",
    "last_active_at": "last active",
    "session_id": "session",
    "metadata": "metadata",
}


def _parse_metadata(_ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON (``3``, ``true``) is that value."""
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
        try:
            metadata[key] = json.loads(raw)
        except json.JSONDecodeError:
            metadata[key] = raw
    return metadata


def _record_row(record: ThreadRecord) -> list[Any]:
    return [getattr(record, name) for name in _RECORD_COLUMNS]


def _message_text(message: BaseMessage) -> str:
    content = message.content
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def _state_summary(values: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in values.items():
        if key == "messages" and isinstance(value, list):
            yield key, f"{len(value)} message(s)"
        else:
            text = as_text(value)
            yield key, text if len(text) <= 200 else text[:199] + "…"


@click.group("threads")
def threads_group() -> None:
    """A user's threads: the registry, checkpoints, fork, archive and delete."""


@threads_group.command("list")
@config_options
@id_option("user")
@click.option("--status", default=None, help="Only threads in this status (active, archived, ...).")
@click.option("--namespace", default=None, help="Only threads of this namespace.")
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    callback=_parse_metadata,
    metavar="KEY=VALUE",
    help="Only threads whose metadata has KEY equal to VALUE (JSON if it parses); repeatable.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", default=None, help="The next_cursor of the previous page.")
@json_option
def list_threads(
    config_file: Path | None,
    data_dir: Path | None,
    user_id: str,
    status: str | None,
    namespace: str | None,
    metadata: dict[str, Any],
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List the user's threads from the registry, most recently active first."""

    async def run(manager: MemoryManager) -> Any:
        return await manager.threads.list(
            user_id, status=status, namespace=namespace, metadata=metadata or None, limit=limit, cursor=cursor
        )

    page = run_with_manager(build_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        if not page.threads:
            filtered = any((status, namespace, metadata, cursor))
            yield f"user {user_id!r} has no threads" + (" matching the filters" if filtered else "")
            return
        yield table(
            *_RECORD_COLUMNS.values(),
            rows=map(_record_row, page.threads),
            title=f"threads of {user_id} (newest first)",
        )
        if page.next_cursor:
            yield f"more: add --cursor {page.next_cursor}"

    emit({"user_id": user_id, "threads": page.threads, "next_cursor": page.next_cursor}, as_json, render)


@threads_group.command("show")
@config_options
@id_option("user")
@id_option("thread")
@id_option("checkpoint", "The checkpoint id (default: the latest).", required=False)
@click.option(
    "--messages",
    "last",
    default=10,
    show_default=True,
    type=click.IntRange(0),
    help="Show the last N messages.",
)
@json_option
def show(
    config_file: Path | None,
    data_dir: Path | None,
    user_id: str,
    thread_id: str,
    checkpoint_id: str | None,
    last: int,
    as_json: bool,
) -> None:
    """Show a thread: its registry row and the state stored at a checkpoint."""

    async def run(manager: MemoryManager) -> tuple[ThreadRecord, dict[str, Any] | None]:
        record = await manager.threads.get(user_id, thread_id)
        try:
            return record, await manager.threads.state(user_id, thread_id, checkpoint_id)
        except NotFoundError:
            if checkpoint_id is not None:
                raise
            return record, None  # registered, but no checkpoint (yet, or any more: archived)

    record, values = run_with_manager(build_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        yield fields_table(record.model_dump(), title=f"thread {thread_id}")
        if values is None:
            yield "no checkpoints"
            return
        at = checkpoint_id or "latest checkpoint"
        yield table("channel", "value", rows=_state_summary(values), title=f"state at {at}")
        messages = [m for m in values.get("messages") or [] if isinstance(m, BaseMessage)]
        if messages and last:
            rows = [(m.type, _message_text(m)) for m in messages[-last:]]
            yield table("role", "content", rows=rows, title=f"last {len(rows)} of {len(messages)} message(s)")

    emit({"thread": record, "state": values}, as_json, render)


@threads_group.command("history")
@config_options
@id_option("user")
@id_option("thread")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1), help="At most N checkpoints.")
@json_option
def history(
    config_file: Path | None, data_dir: Path | None, user_id: str, thread_id: str, limit: int, as_json: bool
) -> None:
    """List a thread's checkpoints, newest first (ids for show --checkpoint and fork)."""

    async def run(manager: MemoryManager) -> Any:
        return await manager.threads.history(user_id, thread_id, limit=limit)

    checkpoints = run_with_manager(build_config(config_file, data_dir), run)
    rows = [
        (c.checkpoint_id, datetime.fromisoformat(c.created_at), c.step, c.source, c.pending_writes)
        for c in checkpoints
    ]

    def render() -> Iterator[Any]:
        columns = ("checkpoint", "created", "step", "source", "pending writes")
        yield table(*columns, rows=rows, title=f"checkpoints of {thread_id} (newest first)")
        if not rows:
            yield "no checkpoints"

    emit({"thread_id": thread_id, "checkpoints": checkpoints}, as_json, render)


@threads_group.command("fork")
@config_options
@id_option("user")
@id_option("thread")
@id_option("checkpoint", "The checkpoint to fork at (default: the latest).", required=False)
@id_option("new-thread", "The new thread's id (default: a random one).", required=False)
@json_option
def fork(
    config_file: Path | None,
    data_dir: Path | None,
    user_id: str,
    thread_id: str,
    checkpoint_id: str | None,
    new_thread_id: str | None,
    as_json: bool,
) -> None:
    """Copy a thread up to a checkpoint into a new thread of the same user."""

    async def run(manager: MemoryManager) -> ThreadRecord:
        return await manager.threads.fork(
            user_id, thread_id, checkpoint_id=checkpoint_id, new_thread_id=new_thread_id
        )

    record = run_with_manager(build_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        yield f"forked {thread_id} at {checkpoint_id or 'its latest checkpoint'} into {record.thread_id}"
        yield fields_table(record.model_dump(), title=f"thread {record.thread_id}")

    emit(record, as_json, render)


@threads_group.command("archive")
@config_options
@id_option("user")
@id_option("thread")
@yes_option
@json_option
def archive(
    config_file: Path | None, data_dir: Path | None, user_id: str, thread_id: str, yes: bool, as_json: bool
) -> None:
    """Summarize a thread into long-term memory, then delete its checkpoints (asks first)."""

    async def run(manager: MemoryManager) -> Any:
        await manager.threads.get(user_id, thread_id)  # owner check before asking
        confirm(
            f"Archive thread {thread_id!r} of user {user_id!r}: summarize it into long-term memory "
            "and delete its checkpoints?",
            yes=yes,
        )
        return await manager.threads.archive(user_id, thread_id)

    result = run_with_manager(build_config(config_file, data_dir), run)

    def render() -> Iterator[Any]:
        yield f"archived thread {thread_id} of user {user_id}"
        yield fields_table(
            {
                "archive_id": result.archive_id,
                "facts learned": result.facts,
                "checkpoints deleted": result.checkpoints_deleted,
                "summary": result.summary,
            }
        )

    emit(result, as_json, render)


@threads_group.command("delete")
@config_options
@id_option("user")
@id_option("thread")
@yes_option
@json_option
def delete(
    config_file: Path | None, data_dir: Path | None, user_id: str, thread_id: str, yes: bool, as_json: bool
) -> None:
    """Delete a thread's checkpoints and registry row (asks first). Facts and archives learned
    from it stay in long-term memory."""

    async def run(manager: MemoryManager) -> bool:
        await manager.threads.get(user_id, thread_id)  # owner check (and exists) before asking
        confirm(f"Delete thread {thread_id!r} of user {user_id!r} and all its checkpoints?", yes=yes)
        return await manager.threads.delete(user_id, thread_id)

    deleted = run_with_manager(build_config(config_file, data_dir), run)
    what = "deleted" if deleted else "already gone:"
    emit(
        {"user_id": user_id, "thread_id": thread_id, "deleted": deleted},
        as_json,
        lambda: [f"{what} thread {thread_id} of user {user_id}"],
    )
