"""``memory-tiers doctor``: check every tier without changing anything.

Each tier is opened on its own (the way the manager opens it, but never with setup), so a tier
that is down or behind is reported as a failed check while the others are still examined; a
`MemoryManager` with ``setup: manual`` would refuse to open at the first outdated schema and
say nothing about the rest. Nothing is created or migrated: a missing SQLite file is reported,
not made, and the working tier's SQLite file is read through a read-only connection.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
import redis.asyncio as aioredis
from rich.text import Text

from memory_tiers.cli.common import (
    FAILED_EXIT_CODE,
    build_config,
    config_options,
    emit,
    json_option,
    missing_sqlite_file,
    table,
)
from memory_tiers.cli.tables import (
    describe_long_term,
    describe_session,
    describe_working,
)
from memory_tiers.config import MemoryTiersConfig
from memory_tiers.errors import MemoryTiersError
from memory_tiers.long_term import migrate
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.session.keys import SessionKeys, glob_escape
from memory_tiers.session.store import SessionStore
from memory_tiers.working.chain import ROOT_NS, thread_config
from memory_tiers.working.checkpointer import open_checkpointer, sqlite_path

Status = Literal["ok", "fail", "skipped"]
_STYLES = {"ok": "green", "fail": "bold red", "skipped": "yellow"}
_SCAN_COUNT = 500  # keys per SCAN call
_SHOWN_KEYS = 5  # keys without a TTL named in the detail
_UPGRADE_HINT = "run `memory-tiers db upgrade`"


@dataclass(frozen=True)
class Check:
    """One check of one tier."""

    tier: str
    check: str
    status: Status
    detail: str


def _reason(exc: BaseException) -> str:
    """The first line of the error; a driver's error also names its type."""
    first = next(iter(str(exc).strip().splitlines()), "")
    if isinstance(exc, MemoryTiersError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


async def _opened(
    tier: str,
    then: str,
    opener: Callable[[], AbstractAsyncContextManager[Any]],
    where: str,
    checks: Callable[[Any], Awaitable[list[Check]]],
) -> list[Check]:
    """``reachable`` (``opener()`` opens), then ``checks`` on what it opened; a failure of either
    is a failed check, and the checks after an unreachable tier are skipped."""
    try:
        async with opener() as handle:
            reachable = Check(tier, "reachable", "ok", where)
            try:
                return [reachable, *await checks(handle)]
            except Exception as exc:
                return [reachable, Check(tier, then, "fail", _reason(exc))]
    except Exception as exc:
        return [Check(tier, "reachable", "fail", _reason(exc)), Check(tier, then, "skipped", "not reachable")]


def _missing(tier: str, then: str, path: Path) -> list[Check]:
    return [
        Check(tier, "reachable", "fail", f"{path} does not exist: {_UPGRADE_HINT}"),
        Check(tier, then, "skipped", "no database"),
    ]


# -- long-term -------------------------------------------------------------------------


async def _revision(store: LongTermStore) -> list[Check]:
    revision, head = await store.schema_revision(), migrate.head_revision()
    if revision == head:
        return [Check("long-term", "schema revision", "ok", f"{revision} (head)")]
    detail = "not set up" if revision is None else f"at {revision}"
    return [Check("long-term", "schema revision", "fail", f"{detail}, head is {head}: {_UPGRADE_HINT}")]


async def check_long_term(cfg: MemoryTiersConfig) -> list[Check]:
    """Reachable, and at the newest schema revision this version knows."""
    if (missing := missing_sqlite_file(cfg, "long_term")) is not None:
        return _missing("long-term", "schema revision", missing)
    return await _opened(
        "long-term",
        "schema revision",
        lambda: LongTermStore.open(cfg.long_term, cfg.data_dir),
        describe_long_term(cfg),
        _revision,
    )


# -- working ---------------------------------------------------------------------------


async def _probe(saver: Any) -> list[Check]:
    """The saver answers a read of a thread nobody has, and (PostgreSQL) its own migrations
    are all applied."""
    found = await saver.aget_tuple(thread_config(f"memory-tiers-doctor-{uuid.uuid4().hex}", ROOT_NS))
    answer = f"aget_tuple answered ({'a' if found else 'no'} checkpoint)"
    checks = [Check("working", "checkpointer answers", "ok", answer)]
    migrations, pool = getattr(saver, "MIGRATIONS", None), getattr(saver, "conn", None)
    if migrations is not None and hasattr(pool, "connection"):  # AsyncPostgresSaver on a pool
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT max(v) AS v FROM checkpoint_migrations")).fetchone()
        applied, newest = (row or {}).get("v"), len(migrations) - 1
        if applied == newest:
            checks.append(Check("working", "saver schema", "ok", f"migration {applied} (newest)"))
        else:
            detail = f"migration {applied}, newest is {newest}: {_UPGRADE_HINT}"
            checks.append(Check("working", "saver schema", "fail", detail))
    return checks


@asynccontextmanager
async def _readonly_sqlite_saver(path: Path) -> AsyncIterator[Any]:
    # AsyncSqliteSaver creates its tables on first use; on a read-only connection, told it is
    # set up, missing tables are a failed read instead of a write.
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as conn:
        saver = AsyncSqliteSaver(conn)
        saver.is_setup = True
        yield saver


async def check_working(cfg: MemoryTiersConfig) -> list[Check]:
    """Reachable, and the checkpointer answers a read."""
    then = "checkpointer answers"
    if (missing := missing_sqlite_file(cfg, "working")) is not None:
        return _missing("working", then, missing)

    def opener() -> AbstractAsyncContextManager[Any]:
        if cfg.working.backend == "sqlite":
            return _readonly_sqlite_saver(sqlite_path(cfg.working, cfg.data_dir))
        return open_checkpointer(cfg.working, cfg.data_dir, setup=False)

    return await _opened("working", then, opener, describe_working(cfg), _probe)


# -- session ---------------------------------------------------------------------------


async def keys_without_ttl(client: aioredis.Redis, prefix: str, limit: int) -> tuple[int, list[str], bool]:
    """SCAN the keys of ``prefix`` (about ``limit`` at most) and return how many were looked at,
    those without a TTL, and whether the scan got through them all. Read-only. The expiry
    index is exempt: it lives as long as the prefix, by design."""
    exempt = SessionKeys(prefix).expiry_index()
    pattern = f"{glob_escape(prefix)}:*"
    scanned, found, cursor = 0, [], 0
    while True:
        cursor, batch = await client.scan(cursor, match=pattern, count=_SCAN_COUNT)
        keys = [key for key in batch if key != exempt]
        if keys:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.ttl(key)
                ttls = await pipe.execute()
            found += [key for key, ttl in zip(keys, ttls, strict=True) if ttl == -1]
        scanned += len(keys)
        if cursor == 0:
            return scanned, found, True
        if scanned >= limit:
            return scanned, found, False


async def check_session(cfg: MemoryTiersConfig, scan_limit: int) -> list[Check]:
    """Reachable, and every key under the prefix expires."""
    prefix = cfg.session.key_prefix

    async def ttls(store: SessionStore) -> list[Check]:
        scanned, found, complete = await keys_without_ttl(store.client, prefix, scan_limit)
        what = f"{scanned} key(s) under {prefix}:" + ("" if complete else " (stopped at --scan-limit)")
        if not found:
            return [Check("session", "keys have a TTL", "ok", f"{what}, all with a TTL")]
        shown = ", ".join(found[:_SHOWN_KEYS]) + (", ..." if len(found) > _SHOWN_KEYS else "")
        return [Check("session", "keys have a TTL", "fail", f"{len(found)} of {what} have no TTL: {shown}")]

    return await _opened(
        "session", "keys have a TTL", lambda: SessionStore.open(cfg.session), describe_session(cfg), ttls
    )


async def run_checks(cfg: MemoryTiersConfig, *, scan_limit: int) -> list[Check]:
    """Every check of every tier, in order: long-term, working, session."""
    return [*await check_long_term(cfg), *await check_working(cfg), *await check_session(cfg, scan_limit)]


@click.command("doctor")
@config_options
@click.option(
    "--scan-limit",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Session keys looked at, at most (SCAN, in batches).",
)
@json_option
def doctor(config_file: Path | None, data_dir: Path | None, scan_limit: int, as_json: bool) -> None:
    """Check every tier: reachable, schema current, the checkpointer answers, session keys all
    expire. Changes nothing. Exit code 1 if any check fails."""
    cfg = build_config(config_file, data_dir)
    checks = asyncio.run(run_checks(cfg, scan_limit=scan_limit))
    failed = [c for c in checks if c.status == "fail"]

    def render() -> Iterator[Any]:
        rows = [(c.tier, c.check, Text(c.status, style=_STYLES[c.status]), c.detail) for c in checks]
        yield table("tier", "check", "status", "detail", rows=rows, title="memory-tiers doctor")
        if failed:
            yield f"{len(failed)} check(s) failed: " + ", ".join(f"{c.tier} {c.check}" for c in failed)
        else:
            yield f"all {len(checks)} checks passed"

    emit({"ok": not failed, "checks": checks}, as_json, render)
    if failed:
        raise SystemExit(FAILED_EXIT_CODE)
