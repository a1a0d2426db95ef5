"""The thread registry: who owns each thread, its namespace, status and activity.

Every thread a user runs is registered to them (by the checkpointer's ownership guard or the
save node), so listing a user's threads or finding idle ones never scans checkpoints. Every
query here is built from the `threads` table with bound parameters; ids, namespaces and
metadata keys are validated before they reach it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_tiers.errors import InvalidIdentifierError, OwnershipError, UsageError
from memory_tiers.long_term.consolidate import insert_for
from memory_tiers.long_term.engine import plan_for_values
from memory_tiers.long_term.models import ThreadRecord
from memory_tiers.long_term.schema import threads
from memory_tiers.store.items import check_value
from memory_tiers.translate import translate_errors

TIER = "long_term"
ThreadStatus = Literal["active", "archiving", "archived", "forking"]
STATUSES: tuple[str, ...] = ("active", "archiving", "archived", "forking")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_PAGE = 1000


def validate_name(kind: str, value: object) -> str:
    """A namespace or metadata key: 1-128 letters, digits or ``_ . -``, starting alphanumeric.

    Example:
        >>> validate_name("namespace", "support")
        'support'
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidIdentifierError(
            f"{kind} {value!r} is invalid: use 1-128 letters, digits or _ . -, "
            "starting with a letter or digit"
        )
    return value


def _check_metadata_filter(metadata: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in metadata.items():
        validate_name("metadata key", key)
        if not isinstance(value, str | int | float | bool):
            raise InvalidIdentifierError(
                f"metadata filter {key!r}: only strings, numbers and booleans can be matched, "
                f"got {type(value).__name__}"
            )
    return check_value(metadata)  # and storable: no NUL (PostgreSQL's jsonb), no NaN


@dataclass(frozen=True)
class ThreadPage:
    """One page of a user's threads, newest activity first; pass ``next_cursor`` for the next."""

    threads: list[ThreadRecord]
    next_cursor: str | None


def _encode_cursor(record: ThreadRecord) -> str:
    raw = json.dumps([record.last_active_at.isoformat(), record.thread_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        active, thread_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(active), str(thread_id)
    except (ValueError, TypeError) as exc:
        raise InvalidIdentifierError(f"cursor {cursor[:40]!r} is not one this API returned") from exc


class ThreadRegistry:
    """Registry rows on the long-term database (``mt_threads``).

    Args:
        engine: the long-term `AsyncEngine`.
        masked_url: how errors name the database.
    """

    def __init__(self, engine: AsyncEngine, masked_url: str) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.masked_url = masked_url

    async def get(self, thread_id: str) -> ThreadRecord | None:
        """The registry row of a thread, whoever owns it."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.connect() as conn:
                row = (
                    (await conn.execute(select(threads).where(threads.c.thread_id == thread_id)))
                    .mappings()
                    .first()
                )
        return None if row is None else ThreadRecord.model_validate(dict(row))

    async def create(
        self,
        user_id: str,
        thread_id: str,
        *,
        now: datetime,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        status: ThreadStatus = "active",
    ) -> ThreadRecord:
        """Register a new thread.

        Raises:
            OwnershipError: another user holds this thread id.
            UsageError: the user already has a thread with this id.
        """
        row = {
            "thread_id": thread_id,
            "user_id": user_id,
            "session_id": session_id,
            "status": status,
            "metadata": check_value(metadata or {}),
            "namespace": validate_name("namespace", namespace),
            "created_at": now,
            "last_active_at": now,
        }
        try:
            with translate_errors(TIER, self.masked_url):
                async with self.engine.begin() as conn:
                    await conn.execute(insert_for(self.dialect, threads).values(**row))
        except IntegrityError:
            existing = await self.get(thread_id)
            if existing is not None and existing.user_id != user_id:
                raise OwnershipError(f"thread {thread_id!r} belongs to another user") from None
            raise UsageError(f"thread {thread_id!r} already exists") from None
        return ThreadRecord.model_validate(row)

    async def list(
        self,
        user_id: str,
        *,
        status: str | None = None,
        namespace: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ThreadPage:
        """A page of the user's threads, most recently active first (keyset pagination).

        Args:
            status: only threads in this status (``active``, ``archived`` ...).
            namespace: only threads of this namespace.
            metadata: only threads whose metadata holds each of these top-level key/values.
            limit: page size, 1 to 1000.
            cursor: ``next_cursor`` of the previous page.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidIdentifierError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        where: list[ColumnElement[bool]] = [threads.c.user_id == user_id]
        if status is not None:
            if status not in STATUSES:
                raise InvalidIdentifierError(f"status {status!r} is invalid: use one of {list(STATUSES)}")
            where.append(threads.c.status == status)
        if namespace is not None:
            where.append(threads.c.namespace == validate_name("namespace", namespace))
        if metadata:
            where.append(self._metadata_matches(_check_metadata_filter(metadata)))
        if cursor is not None:
            active, thread_id = _decode_cursor(cursor)
            where.append(
                or_(
                    threads.c.last_active_at < active,
                    and_(threads.c.last_active_at == active, threads.c.thread_id < thread_id),
                )
            )
        stmt = (
            select(threads)
            .where(*where)
            .order_by(threads.c.last_active_at.desc(), threads.c.thread_id.desc())
            .limit(limit + 1)
        )
        with translate_errors(TIER, self.masked_url):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        records = [ThreadRecord.model_validate(dict(row)) for row in rows[:limit]]
        next_cursor = _encode_cursor(records[-1]) if len(rows) > limit else None
        return ThreadPage(records, next_cursor)

    def _metadata_matches(self, metadata: dict[str, Any]) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return threads.c.metadata.op("@>")(bindparam("meta", metadata, type_=postgresql.JSONB))
        clauses = []
        for i, (key, value) in enumerate(metadata.items()):
            path = bindparam(f"meta_path_{i}", f'$."{key}"')
            kind = func.json_type(threads.c.metadata, path)
            # json_extract gives 1/0 for JSON booleans, so booleans are matched by their type.
            if isinstance(value, bool):
                clauses.append(kind == ("true" if value else "false"))
            else:
                clauses.append(
                    and_(kind.not_in(["true", "false"]), func.json_extract(threads.c.metadata, path) == value)
                )
        return and_(*clauses)

    async def set_status(
        self,
        thread_id: str,
        status: ThreadStatus,
        *,
        expected: Sequence[str] | None = None,
        idle_before: datetime | None = None,
        archived_at: datetime | None = None,
    ) -> bool:
        """Move a thread to ``status``; with ``expected`` only from those statuses, with
        ``idle_before`` only if it has not been active since. Returns whether it moved."""
        stmt = update(threads).where(threads.c.thread_id == thread_id)
        if expected is not None:
            stmt = stmt.where(threads.c.status.in_(list(expected)))
        if idle_before is not None:
            stmt = stmt.where(threads.c.last_active_at < idle_before)
        values: dict[str, Any] = {"status": status}
        if archived_at is not None:
            values["archived_at"] = archived_at
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                result = await conn.execute(stmt.values(**values))
        return bool(result.rowcount)

    async def mark_pruned(self, thread_ids: Sequence[str], at: datetime) -> None:
        """Record that retention pruned these threads' checkpoints as of ``at`` (one UPDATE)."""
        if not thread_ids:
            return
        stmt = update(threads).where(threads.c.thread_id.in_(list(thread_ids))).values(pruned_at=at)
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await conn.execute(stmt)

    async def remove(self, user_id: str, thread_id: str) -> bool:
        """Delete the registry row of the user's thread. Returns whether there was one."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    delete(threads).where(threads.c.thread_id == thread_id, threads.c.user_id == user_id)
                )
        return bool(result.rowcount)

    async def idle(
        self,
        *,
        namespaces: Sequence[str] | None,
        exclude: Sequence[str],
        before: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[ThreadRecord]:
        """Active (or half-archived) threads not used since ``before``, oldest activity first.

        Args:
            namespaces: only these namespaces; None for every namespace not in ``exclude``.
            exclude: namespaces left out (they have rules of their own).
            after: the (last_active_at, thread_id) of the previous batch's last row.
        """
        # An ``archiving`` thread is one a crashed run left half-done: it is finished now.
        where: list[ColumnElement[bool]] = [
            threads.c.status.in_(["active", "archiving"]),
            threads.c.last_active_at < before,
        ]
        if namespaces is not None:
            where.append(threads.c.namespace.in_(list(namespaces)))
        elif exclude:
            where.append(threads.c.namespace.not_in(list(exclude)))
        if after is not None:
            where.append(
                or_(
                    threads.c.last_active_at > after[0],
                    and_(threads.c.last_active_at == after[0], threads.c.thread_id > after[1]),
                )
            )
        stmt = (
            select(threads).where(*where).order_by(threads.c.last_active_at, threads.c.thread_id).limit(limit)
        )
        with translate_errors(TIER, self.masked_url):
            async with self.engine.connect() as conn:
                await plan_for_values(conn)
                rows = (await conn.execute(stmt)).mappings().all()
        return [ThreadRecord.model_validate(dict(row)) for row in rows]

    async def unpruned(
        self,
        *,
        namespaces: Sequence[str] | None,
        exclude: Sequence[str],
        limit: int,
        after: str | None = None,
    ) -> list[ThreadRecord]:
        """Active threads used since retention last pruned them, in thread id order."""
        where: list[ColumnElement[bool]] = [
            threads.c.status == "active",
            or_(threads.c.pruned_at.is_(None), threads.c.pruned_at < threads.c.last_active_at),
        ]
        if namespaces is not None:
            where.append(threads.c.namespace.in_(list(namespaces)))
        elif exclude:
            where.append(threads.c.namespace.not_in(list(exclude)))
        if after is not None:
            where.append(threads.c.thread_id > after)
        stmt = select(threads).where(*where).order_by(threads.c.thread_id).limit(limit)
        with translate_errors(TIER, self.masked_url):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        return [ThreadRecord.model_validate(dict(row)) for row in rows]
