"""The long-term tier's tables (SQLAlchemy Core). Alembic migrations create them; never DDL here."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

ID = 128  # matches memory_tiers.ids.MAX_ID_LENGTH
UUID_LEN = 36
MAX_FACT_VALUE = 500

Document = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

profiles = Table(
    "mt_profiles",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("document", Document, nullable=False),
    Column("version", Integer, nullable=False),  # the patch counter: bumped when the document changes
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The shape of ``document`` (long_term.profile.version when written); see migration 0003.
    Column("schema_version", Integer, nullable=False, server_default=text("1")),
)

facts = Table(
    "mt_facts",
    metadata,
    Column("id", String(UUID_LEN), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("subject", String(ID), nullable=False),
    Column("attribute", String(ID), nullable=False),
    Column("value", String(MAX_FACT_VALUE), nullable=False),
    Column("value_norm", String(MAX_FACT_VALUE), nullable=False),
    Column("cardinality", String(8), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("thread_id", String(ID)),
    Column("checkpoint_id", String(ID)),
    Column("message_id", String(ID)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_to", DateTime(timezone=True)),
    Column("superseded_by", String(UUID_LEN)),
    Column("pinned", Boolean, nullable=False, server_default=false()),
    Column("flagged", Boolean, nullable=False, server_default=false()),
    # SQL NULL (not JSON null) when absent, so an upsert can keep or fill it with COALESCE.
    Column("embedding", JSON(none_as_null=True)),
    # The fact's words, case-folded and space-padded, for relevance scoring (recall.search_text).
    Column("search_text", Text, nullable=False, server_default=""),
)
# One current fact per (user, subject, attribute, value): duplicates merge by constraint,
# never by check-then-insert.
current_fact_key = Index(
    "ux_mt_facts_current",
    facts.c.user_id,
    facts.c.subject,
    facts.c.attribute,
    facts.c.value_norm,
    unique=True,
    sqlite_where=facts.c.superseded_by.is_(None),
    postgresql_where=facts.c.superseded_by.is_(None),
)
Index("ix_mt_facts_recall", facts.c.user_id, facts.c.superseded_by, facts.c.confidence)
# A user's pinned current facts, newest first, recalled on every turn (migration 0006); most
# users have none.
_pinned_current = facts.c.pinned.is_(True) & facts.c.superseded_by.is_(None)
Index(
    "ix_mt_facts_pinned",
    facts.c.user_id,
    facts.c.updated_at.desc(),
    facts.c.id,
    sqlite_where=_pinned_current,
    postgresql_where=_pinned_current,
)

# One row per time a fact was observed; the key makes replaying a turn a no-op.
fact_observations = Table(
    "mt_fact_observations",
    metadata,
    Column("fact_id", String(UUID_LEN), primary_key=True),
    Column("observation_key", String(400), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("thread_id", String(ID)),
    Column("checkpoint_id", String(ID)),
    Column("message_id", String(ID)),
    Column("confidence", Float, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
)
# A replayed turn is recognised by its observation keys (mt_consolidate on PostgreSQL, migration
# 0009; consolidate._replay_check on SQLite); lookups by user alone use it too (migration 0008
# dropped the index on user_id by itself).
Index("ix_mt_fact_observations_user_key", fact_observations.c.user_id, fact_observations.c.observation_key)

threads = Table(
    "mt_threads",
    metadata,
    Column("thread_id", String(ID), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("session_id", String(ID)),
    Column("status", String(16), nullable=False),
    Column("metadata", Document, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_active_at", DateTime(timezone=True), nullable=False),
    # Retention policies are set per namespace (migration 0005).
    Column("namespace", String(ID), nullable=False, server_default=text("'default'")),
    Column("archived_at", DateTime(timezone=True)),
    Column("pruned_at", DateTime(timezone=True)),  # when retention last pruned its checkpoints
)
Index("ix_mt_threads_user_active", threads.c.user_id, threads.c.last_active_at)
Index(
    "ix_mt_threads_namespace_status_active", threads.c.namespace, threads.c.status, threads.c.last_active_at
)

archives = Table(
    "mt_archives",
    metadata,
    Column("id", String(UUID_LEN), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("thread_id", String(ID)),
    Column("session_id", String(ID)),
    Column("summary", Text, nullable=False),
    Column("data", Document, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_mt_archives_user_created", archives.c.user_id, archives.c.created_at)

# The LangGraph BaseStore's items; ``user_id`` is the tenant every query is scoped to and
# ``namespace`` the store namespace's labels joined by ".".
store_items = Table(
    "mt_store_items",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    # Bytewise on PostgreSQL (migration 0010), as SQLite's text is: prefix searches are ranges.
    Column("namespace", Text().with_variant(Text(collation="C"), "postgresql"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Document, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), index=True),
    Column("ttl_minutes", Float),
)
