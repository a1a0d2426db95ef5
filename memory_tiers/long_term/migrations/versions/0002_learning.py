"""Learning long-term memory: per-observation provenance, full-text recall, pinned and flagged
facts, embeddings for semantic recall, and the key-value items behind the LangGraph store.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Document = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

# The words a fact is found by: its subject, its attribute (underscores as spaces) and its value.
# The 'simple' configuration neither stems nor drops stop words, so every language is treated alike.
PG_SEARCH_VECTOR = (
    "to_tsvector('simple'::regconfig, subject || ' ' || replace(attribute, '_', ' ') || ' ' || value)"
)

SQLITE_FTS_TRIGGERS = (
    """CREATE TRIGGER mt_facts_fts_insert AFTER INSERT ON mt_facts BEGIN
         INSERT INTO mt_facts_fts(rowid, subject, attribute, value)
         VALUES (new.rowid, new.subject, new.attribute, new.value);
       END""",
    """CREATE TRIGGER mt_facts_fts_delete AFTER DELETE ON mt_facts BEGIN
         INSERT INTO mt_facts_fts(mt_facts_fts, rowid, subject, attribute, value)
         VALUES ('delete', old.rowid, old.subject, old.attribute, old.value);
       END""",
    """CREATE TRIGGER mt_facts_fts_update AFTER UPDATE OF subject, attribute, value ON mt_facts BEGIN
         INSERT INTO mt_facts_fts(mt_facts_fts, rowid, subject, attribute, value)
         VALUES ('delete', old.rowid, old.subject, old.attribute, old.value);
         INSERT INTO mt_facts_fts(rowid, subject, attribute, value)
         VALUES (new.rowid, new.subject, new.attribute, new.value);
       END""",
)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("mt_facts") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("flagged", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("embedding", sa.JSON()))
    create_full_text(dialect)

    op.create_table(
        "mt_fact_observations",
        sa.Column("fact_id", sa.String(36), nullable=False),
        sa.Column("observation_key", sa.String(400), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("thread_id", sa.String(128)),
        sa.Column("checkpoint_id", sa.String(128)),
        sa.Column("message_id", sa.String(128)),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("observed_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("fact_id", "observation_key", name="pk_mt_fact_observations"),
    )
    op.create_index("ix_mt_fact_observations_user_id", "mt_fact_observations", ["user_id"])
    # Facts stored before this revision keep their provenance as their first observation.
    op.execute(
        "INSERT INTO mt_fact_observations (fact_id, observation_key, user_id, thread_id, "
        "checkpoint_id, message_id, confidence, observed_at) "
        "SELECT id, 'migrated:' || id, user_id, thread_id, checkpoint_id, message_id, confidence, "
        "created_at FROM mt_facts"
    )

    op.create_table(
        "mt_store_items",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", Document, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp),
        sa.Column("ttl_minutes", sa.Float()),
        sa.PrimaryKeyConstraint("user_id", "namespace", "key", name="pk_mt_store_items"),
    )
    op.create_index("ix_mt_store_items_expires_at", "mt_store_items", ["expires_at"])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("mt_store_items")
    op.drop_table("mt_fact_observations")
    drop_full_text(dialect)
    with op.batch_alter_table("mt_facts") as batch:
        batch.drop_column("embedding")
        batch.drop_column("flagged")
        batch.drop_column("pinned")


def create_full_text(dialect: str) -> None:
    """The facts' full-text index: a generated tsvector with a GIN index on PostgreSQL, an FTS5
    table kept by triggers on SQLite. Revision 0007 drops it again (recall never used it)."""
    if dialect == "postgresql":
        op.execute(
            f"ALTER TABLE mt_facts ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({PG_SEARCH_VECTOR}) STORED"
        )
        op.create_index("ix_mt_facts_search", "mt_facts", ["search_vector"], postgresql_using="gin")
    else:
        # tokenchars '' and the unicode61 tokenizer split on '_' like PostgreSQL's parser.
        op.execute(
            "CREATE VIRTUAL TABLE mt_facts_fts USING fts5(subject, attribute, value, "
            "content='mt_facts', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')"
        )
        for trigger in SQLITE_FTS_TRIGGERS:
            op.execute(trigger)
        op.execute("INSERT INTO mt_facts_fts(mt_facts_fts) VALUES ('rebuild')")


def drop_full_text(dialect: str) -> None:
    """Undo `create_full_text`."""
    if dialect == "postgresql":
        op.drop_index("ix_mt_facts_search", table_name="mt_facts")
        op.execute("ALTER TABLE mt_facts DROP COLUMN search_vector")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS mt_facts_fts_{name}")
        op.execute("DROP TABLE IF EXISTS mt_facts_fts")
