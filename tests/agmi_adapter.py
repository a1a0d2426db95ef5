"""An agent-memory-integrity (agmi) adapter for memory_tiers' long-term facts.

A record is one row of ``mt_facts`` of the test's user, in the order the store wrote them
(``created_at``, then ``id``). Seeding and verifying go through memory_tiers' own API
(``manager.long_term.add_facts``, then, after a reopen, ``list_facts`` and ``search_facts``, as
the load node's recall reads them); the edits go straight to the database with a plain
SQLAlchemy connection, as an attacker with write access to it would. ``verify()`` is True when
memory_tiers loads and serves the facts without raising, which is all it can say: the store makes
no integrity claim against someone who can write to its database (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from agmi.adapters.base import MemoryAdapter, Record
from sqlalchemy import create_engine, delete, insert, select, update
from sqlalchemy.engine import make_url

from memory_tiers import FactCandidate, MemoryManager
from memory_tiers.long_term.schema import fact_observations, facts, store_items

CONTENT_KEYS = ("subject", "attribute", "value", "value_norm", "cardinality", "valid_from", "search_text")
"""What a fact says; the other columns are its slot (id, owner, write time) or its metadata."""
META_KEYS = ("thread_id", "checkpoint_id", "message_id", "pinned", "flagged", "confidence")


def _sync_url(url: str) -> str:
    parsed = make_url(url)
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


class MemoryTiersFactsAdapter(MemoryAdapter):
    """memory_tiers' long-term facts on SQLite (``url=None``: a new file per run) or on the
    PostgreSQL database at ``url`` (a new pair of users per run)."""

    supports_replay = True
    supports_metadata = True
    supports_snapshot = True
    POSITION_KEYS = ("id", "user_id", "created_at", "updated_at")

    def __init__(self, url: str | None = None) -> None:
        self.name = f"memory_tiers long-term facts ({'postgres' if url else 'sqlite'})"
        self._server_url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: MemoryManager | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._reordering = True

    # ------------------------------------------------------------------ lifecycle
    def setup(self) -> None:
        self.teardown()
        self._loop = asyncio.new_event_loop()
        if self._server_url is None:
            self._dir = tempfile.TemporaryDirectory(prefix="agmi-memory-tiers-")
            self._url = f"sqlite+aiosqlite:///{Path(self._dir.name) / 'long_term.db'}"
        else:
            self._url = self._server_url
        self._raw = create_engine(_sync_url(self._url))
        run = uuid.uuid4().hex[:10]
        self.user, self.other = f"agmi-a-{run}", f"agmi-b-{run}"
        self._open()

    def teardown(self) -> None:
        self._close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if getattr(self, "_raw", None) is not None:
            self._raw.dispose()
            self._raw = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _config(self) -> dict[str, Any]:
        return {"working": {"backend": "memory"}, "long_term": {"url": self._url}}

    def _open(self) -> None:
        self._manager = MemoryManager(self._config())
        self._call(self._manager.__aenter__())

    def _close(self) -> None:
        if self._manager is not None:
            self._call(self._manager.__aexit__(None, None, None))
            self._manager = None

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    def reload(self) -> None:
        self._close()
        self._open()

    # ------------------------------------------------------------------ the tool's own paths
    def _add(self, user: str, value: str) -> None:
        assert self._manager is not None
        self._call(self._manager.long_term.add_facts(user, [FactCandidate(attribute="likes", value=value)]))

    def seed(self, n: int) -> None:
        for i in range(n):
            self._add(self.user, f"topic {i} of {self.user}")

    def seed_other(self, n: int) -> None:
        for i in range(n):
            self._add(self.other, f"subject {i} of {self.other}")

    def append_genuine(self) -> None:
        self._add(self.user, "one more genuine topic")

    def verify(self) -> bool:
        assert self._manager is not None
        try:
            self._call(self._manager.long_term.list_facts(self.user, include_history=True))
            self._call(self._manager.long_term.search_facts(self.user, "topic"))
        except Exception as error:
            self.verify_detail = f"{type(error).__name__}: {error}"
            return False
        return True

    # ------------------------------------------------------------------ raw access (the attacker)
    def _rows(self, user: str) -> list[dict[str, Any]]:
        with self._raw.connect() as conn:
            stmt = select(facts).where(facts.c.user_id == user).order_by(facts.c.created_at, facts.c.id)
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def read_all_raw(self) -> list[Record]:
        return [Record(seq, row) for seq, row in enumerate(self._rows(self.user))]

    def read_other_raw(self) -> list[Record]:
        return [Record(seq, row) for seq, row in enumerate(self._rows(self.other))]

    def write_raw(self, record: Record) -> None:
        """The record's content into slot ``record.seq`` (keeping the slot's id, owner and write
        time), or a new row when the slot does not exist (a forgery)."""
        rows = self._rows(self.user)
        with self._raw.begin() as conn:
            if record.seq < len(rows):
                content = {key: record.fields[key] for key in (*CONTENT_KEYS, *META_KEYS)}
                target = rows[record.seq]
                if all(target[key] == content[key] for key in content):
                    return  # already there (the second half of a swap)
                source = next((row for row in rows if row["id"] == record.fields["id"] != target["id"]), None)
                if self._reordering and source is not None:
                    # A move (T4): the source slot takes the target's content, in one transaction
                    # (the unique index on a user's current values forbids two equal rows).
                    conn.execute(
                        update(facts).where(facts.c.id == source["id"]).values(value_norm=str(uuid.uuid4()))
                    )
                conn.execute(update(facts).where(facts.c.id == target["id"]).values(**content))
                if self._reordering and source is not None:
                    old = {key: target[key] for key in content}
                    conn.execute(update(facts).where(facts.c.id == source["id"]).values(**old))
            else:
                conn.execute(insert(facts).values(**record.fields))

    def delete_raw(self, seq: int) -> None:
        row = self._rows(self.user)[seq]
        with self._raw.begin() as conn:
            conn.execute(delete(facts).where(facts.c.id == row["id"]))

    def mutate_payload(self, record: Record) -> Record:
        fields = dict(record.fields)
        fields["value"] = f"{fields['value']} [TAMPERED]"
        fields["value_norm"] = f"{fields['value_norm']} [tampered]"
        fields["search_text"] = f"{fields['search_text']} tampered"
        return Record(record.seq, fields)

    def forge_record(self, template: Record) -> Record:
        fields = dict(template.fields)
        later = fields["created_at"] + timedelta(seconds=1)
        fields.update(id=str(uuid.uuid4()), created_at=later, updated_at=later, valid_from=later)
        return self.mutate_payload(Record(template.seq + 1, fields))

    def replay_onto(self, victim_seq: int, donor: Record) -> None:
        """A copy, not a move: the donor row stays where it is (T6, T7)."""
        self._reordering = False
        try:
            self.write_raw(Record(victim_seq, dict(donor.fields)))
        finally:
            self._reordering = True

    def owner_of(self, record: Record) -> str | None:
        return record.fields.get("user_id")

    def payload_of(self, record: Record) -> str:
        import json

        return json.dumps({key: record.fields.get(key) for key in CONTENT_KEYS}, sort_keys=True, default=str)

    def read_meta(self, seq: int) -> dict[str, Any]:
        row = self._rows(self.user)[seq]
        return {key: row[key] for key in META_KEYS}

    def write_meta(self, seq: int, meta: dict[str, Any]) -> None:
        """The attacker's metadata: the fact pinned (recalled on every turn) and attributed to
        another thread, its content untouched."""
        row = self._rows(self.user)[seq]
        values = {key: meta[key] for key in META_KEYS}
        if meta.get("agmi_meta_tampered"):
            values.update(pinned=True, thread_id="forged-thread", confidence=1.0)
        with self._raw.begin() as conn:
            conn.execute(update(facts).where(facts.c.id == row["id"]).values(**values))

    # ------------------------------------------------------------------ T9: roll the whole store back
    def snapshot_store(self) -> object:
        with self._raw.connect() as conn:
            return {
                table: [
                    dict(row._mapping)
                    for row in conn.execute(select(table).where(table.c.user_id == self.user))
                ]
                for table in (facts, fact_observations)
            }

    def restore_store(self, token: object) -> None:
        assert isinstance(token, dict)
        self._close()
        with self._raw.begin() as conn:
            conn.execute(delete(fact_observations).where(fact_observations.c.user_id == self.user))
            conn.execute(delete(facts).where(facts.c.user_id == self.user))
            for table in (facts, fact_observations):
                if token[table]:
                    conn.execute(insert(table), token[table])
        self._open()


class MemoryTiersStoreAdapter(MemoryTiersFactsAdapter):
    """memory_tiers' LangGraph store (``manager.store``, rows of ``mt_store_items``): a record is
    one item of the user's namespace ``("notes",)``, in write order; its slot is its key."""

    NAMESPACE = ("notes",)
    POSITION_KEYS = ("user_id", "namespace", "key", "created_at")
    META = ("updated_at", "expires_at", "ttl_minutes")

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self.name = f"memory_tiers LangGraph store ({'postgres' if url else 'sqlite'})"
        self._written = 0

    def _put(self, user: str, text: str) -> None:
        assert self._manager is not None
        self._written += 1
        store = self._manager.store.for_user(user)
        self._call(store.aput(self.NAMESPACE, f"item-{self._written:04d}", {"text": text}))

    def _add(self, user: str, value: str) -> None:
        self._put(user, value)

    def verify(self) -> bool:
        assert self._manager is not None
        store = self._manager.store.for_user(self.user)
        try:
            items = self._call(store.asearch(self.NAMESPACE, limit=100))
            for item in items:
                self._call(store.aget(self.NAMESPACE, item.key))
        except Exception as error:
            self.verify_detail = f"{type(error).__name__}: {error}"
            return False
        return True

    def _rows(self, user: str) -> list[dict[str, Any]]:
        with self._raw.connect() as conn:
            stmt = (
                select(store_items)
                .where(store_items.c.user_id == user)
                .order_by(store_items.c.created_at, store_items.c.key)
            )
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def _where(self, row: dict[str, Any]) -> Any:
        return (
            (store_items.c.user_id == row["user_id"])
            & (store_items.c.namespace == row["namespace"])
            & (store_items.c.key == row["key"])
        )

    def write_raw(self, record: Record) -> None:
        rows = self._rows(self.user)
        with self._raw.begin() as conn:
            if record.seq < len(rows):
                values = {"value": record.fields["value"], **{key: record.fields[key] for key in self.META}}
                conn.execute(update(store_items).where(self._where(rows[record.seq])).values(**values))
            else:
                conn.execute(insert(store_items).values(**record.fields))

    def delete_raw(self, seq: int) -> None:
        row = self._rows(self.user)[seq]
        with self._raw.begin() as conn:
            conn.execute(delete(store_items).where(self._where(row)))

    def mutate_payload(self, record: Record) -> Record:
        fields = dict(record.fields)
        fields["value"] = {**fields["value"], "text": f"{fields['value']['text']} [TAMPERED]"}
        return Record(record.seq, fields)

    def forge_record(self, template: Record) -> Record:
        fields = dict(template.fields)
        later = fields["created_at"] + timedelta(seconds=1)
        fields.update(key="item-forged", created_at=later, updated_at=later)
        return self.mutate_payload(Record(template.seq + 1, fields))

    def replay_onto(self, victim_seq: int, donor: Record) -> None:
        self.write_raw(Record(victim_seq, dict(donor.fields)))

    def identity_of(self, record: Record) -> str:
        return str(record.fields["key"])

    def payload_of(self, record: Record) -> str:
        import json

        return json.dumps(record.fields["value"], sort_keys=True, default=str)

    def read_meta(self, seq: int) -> dict[str, Any]:
        row = self._rows(self.user)[seq]
        return {key: row[key] for key in self.META}

    def write_meta(self, seq: int, meta: dict[str, Any]) -> None:
        """The attacker's metadata: a back-dated ``updated_at``, the value untouched."""
        row = self._rows(self.user)[seq]
        values = {key: meta[key] for key in self.META}
        if meta.get("agmi_meta_tampered"):
            values["updated_at"] = row["created_at"] - timedelta(days=365)
        with self._raw.begin() as conn:
            conn.execute(update(store_items).where(self._where(row)).values(**values))

    def snapshot_store(self) -> object:
        return self._rows(self.user)

    def restore_store(self, token: object) -> None:
        assert isinstance(token, list)
        self._close()
        with self._raw.begin() as conn:
            conn.execute(delete(store_items).where(store_items.c.user_id == self.user))
            if token:
                conn.execute(insert(store_items), token)
        self._open()


# ---------------------------------------------------------------------- the checkpoint store
# agmi's own adapters of LangGraph's SqliteSaver and PostgresSaver, with the saver given the
# serializer memory_tiers opens every checkpointer with (strict: no pickle, an allowlist). The
# tables, the rows and the read path (get_tuple / list) are LangGraph's; the serializer is the
# only thing memory_tiers changes at rest (its guard checks a thread's owner, not its rows).


def _strict(saver: Any) -> None:
    from memory_tiers.working.serde import allowlist, strict_serde

    saver.serde = strict_serde(allowlist())


def checkpoint_adapters() -> tuple[type[MemoryAdapter], type[MemoryAdapter]]:
    from agmi.adapters.langgraph_postgres import LangGraphPostgresAdapter
    from agmi.adapters.langgraph_sqlite import LangGraphSqliteAdapter

    class StrictSqliteCheckpoints(LangGraphSqliteAdapter):
        name = "memory_tiers checkpoints (sqlite, strict serde)"

        def setup(self) -> None:
            super().setup()
            _strict(self._saver)

        def reload(self) -> None:
            super().reload()
            _strict(self._saver)

    class StrictPostgresCheckpoints(LangGraphPostgresAdapter):
        name = "memory_tiers checkpoints (postgres, strict serde)"

        def _open_saver(self) -> None:
            super()._open_saver()
            _strict(self._saver)

    return StrictSqliteCheckpoints, StrictPostgresCheckpoints
