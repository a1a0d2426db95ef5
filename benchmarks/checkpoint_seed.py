"""Many threads of real LangGraph checkpoints, fast: one template thread, copied in SQL.

A template thread is written by running a small graph on ``AsyncPostgresSaver`` (so every row
is in the saver's own format), then its rows in ``checkpoints``, ``checkpoint_blobs`` and
``checkpoint_writes`` are copied under new thread ids by ``INSERT ... SELECT`` over
``unnest(ids)``, and (for the manager's database) the threads are registered in ``mt_threads``
by COPY with the library's columns. `copy_template` moves the template to a second database,
so both sides of a comparison hold byte-identical checkpoints. On any other saver,
`copy_head` writes a template thread's latest checkpoint under new ids through ``aput``.
"""

from __future__ import annotations

import asyncio
import json
import operator
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

import asyncpg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from benchmarks.servers import libpq_url
from memory_tiers.long_term.schema import threads

SAVER_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
COPY_BATCH = 100  # aput calls in flight at once
THREAD_COLUMNS = ("thread_id", "user_id", "status", "metadata", "created_at", "last_active_at", "namespace")


class CounterState(TypedDict, total=False):
    """A small state: a counter, a note and a short list of recent notes."""

    step: int
    note: str
    recent: Annotated[list[str], operator.add]


def _count(state: CounterState) -> CounterState:
    step = state.get("step", 0) + 1
    return {"step": step, "note": f"step {step}", "recent": [f"n{step}"]}


async def write_template(saver: BaseCheckpointSaver[Any], thread_id: str, turns: int) -> int:
    """Run a 1-node graph ``turns`` times on ``thread_id``; return its checkpoint count."""
    builder = StateGraph(CounterState)
    builder.add_node("count", _count)
    builder.add_edge(START, "count")
    builder.add_edge("count", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    for _ in range(turns):
        await graph.ainvoke({"note": "turn"}, config)
    return len([tup async for tup in saver.alist(config)])


async def copy_head(saver: BaseCheckpointSaver[Any], template: str, thread_ids: Sequence[str]) -> None:
    """Write thread ``template``'s latest checkpoint as the only one of each of ``thread_ids``,
    through the saver's ``aput`` (any saver), a hundred at a time."""
    head = await saver.aget_tuple({"configurable": {"thread_id": template, "checkpoint_ns": ""}})
    assert head is not None, f"no template thread {template!r}"
    versions = dict(head.checkpoint["channel_versions"])

    async def put(thread_id: str) -> None:
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        await saver.aput(config, head.checkpoint, head.metadata, versions)

    for start in range(0, len(thread_ids), COPY_BATCH):
        await asyncio.gather(*(put(t) for t in thread_ids[start : start + COPY_BATCH]))


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [row["column_name"] for row in rows]


async def replicate(url: str, template: str, thread_ids: Sequence[str]) -> None:
    """Copy every row of thread ``template`` under each of ``thread_ids`` (one statement per table)."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        async with conn.transaction():
            for table in SAVER_TABLES:
                columns = await _columns(conn, table)
                listed = ", ".join(columns)
                chosen = ", ".join("n.id" if c == "thread_id" else f"t.{c}" for c in columns)
                await conn.execute(
                    f"INSERT INTO {table} ({listed}) SELECT {chosen} FROM {table} AS t, "
                    "unnest($1::text[]) AS n(id) WHERE t.thread_id = $2",
                    list(thread_ids),
                    template,
                )
        await conn.execute("ANALYZE checkpoints; ANALYZE checkpoint_blobs; ANALYZE checkpoint_writes")
    finally:
        await conn.close()


async def copy_template(source_url: str, target_url: str, template: str) -> None:
    """Copy thread ``template``'s saver rows from one database to another (same tables)."""
    source = await asyncpg.connect(libpq_url(source_url))
    target = await asyncpg.connect(libpq_url(target_url))
    try:
        for table in SAVER_TABLES:
            columns = await _columns(source, table)
            rows = await source.fetch(
                f"SELECT {', '.join(columns)} FROM {table} WHERE thread_id = $1", template
            )
            await target.copy_records_to_table(table, records=[tuple(row) for row in rows], columns=columns)
    finally:
        await source.close()
        await target.close()


async def register(url: str, user_id: str, thread_ids: Sequence[str]) -> None:
    """Register ``thread_ids`` to ``user_id`` in the library's thread registry (COPY)."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(libpq_url(url))
    try:
        records = [(t, user_id, "active", json.dumps({}), now, now, "default") for t in thread_ids]
        await conn.copy_records_to_table(threads.name, records=records, columns=THREAD_COLUMNS)
    finally:
        await conn.close()


async def settle(url: str, tables: Sequence[str]) -> None:
    """VACUUM (ANALYZE) ``tables`` (names this module or the schema defines): rows seeded in
    bulk are then as a database in service holds them (hint bits set, statistics current), so
    whichever side is timed first does not pay for the seeding's aftermath (autovacuum and
    first-touch writes) alone."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
    finally:
        await conn.close()


async def count_checkpoints(url: str, thread_ids: Sequence[str]) -> int:
    """How many checkpoints the threads have left."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM checkpoints WHERE thread_id = ANY($1)", list(thread_ids)
            )
        )
    finally:
        await conn.close()
