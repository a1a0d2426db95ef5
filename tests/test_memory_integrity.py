"""agent-memory-integrity (agmi) against memory_tiers at rest, in record-only mode: the long-term
facts (``mt_facts``), the LangGraph store (``manager.store``, ``mt_store_items``) and the
checkpoint store (LangGraph's tables read through memory_tiers' strict serializer), each on
SQLite and PostgreSQL (adapters in ``tests/agmi_adapter.py``).

memory_tiers makes no integrity claim against someone who can write to its database (see
docs/reliability.md, "Tampering at rest"): these tests record agmi's verdicts and fail only when
one changes, so a new defence (or a lost refusal) is noticed and the table in the docs updated.
"""

from __future__ import annotations

import pytest
from agmi.adapters.base import MemoryAdapter
from agmi.check import run
from agmi_adapter import MemoryTiersFactsAdapter, MemoryTiersStoreAdapter, checkpoint_adapters

from memory_tiers.long_term.engine import normalize_sql_url

ATTACKS = (
    "tamper",
    "truncate",
    "delete_middle",
    "reorder",
    "forge",
    "cross_replay",
    "rollback_replay",
    "metadata_tamper",
    "snapshot_rollback",
)
EVERY_EDIT_SERVED = dict.fromkeys(ATTACKS, "ACCEPTED")
FACTS_EXPECTED = EVERY_EDIT_SERVED | {
    # The edit (the oldest fact's content copied over the newest) is refused by the database:
    # the unique index on a user's current (subject, attribute, normalized value) forbids two
    # equal rows. A rollback to a value the user no longer has is a T1 edit, and is served.
    "rollback_replay": "NOT EVALUABLE",
}


def _verdicts(adapter: MemoryAdapter) -> dict[str, str]:
    try:
        rows = run(adapter)
    finally:
        adapter.teardown()
    for row in rows:
        print(f"{adapter.name}: {row['edit']}: {row['verdict']} {row['detail'][:120]!r}")
    return {row["attack"]: row["verdict"] for row in rows}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (each adapter makes its own files), else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("fresh_postgres_url")


def test_long_term_facts(server: str | None) -> None:
    url = None if server is None else normalize_sql_url(server)
    assert _verdicts(MemoryTiersFactsAdapter(url)) == FACTS_EXPECTED


def test_langgraph_store(server: str | None) -> None:
    url = None if server is None else normalize_sql_url(server)
    assert _verdicts(MemoryTiersStoreAdapter(url)) == EVERY_EDIT_SERVED


def test_checkpoints(server: str | None) -> None:
    sqlite_checkpoints, postgres_checkpoints = checkpoint_adapters()
    adapter = sqlite_checkpoints() if server is None else postgres_checkpoints(server)
    assert _verdicts(adapter) == EVERY_EDIT_SERVED
