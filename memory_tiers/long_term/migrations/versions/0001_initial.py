"""Initial long-term schema: profiles, facts, thread registry, archives.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Document = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mt_profiles",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("document", Document, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_mt_profiles"),
    )
    op.create_table(
        "mt_facts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("attribute", sa.String(128), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("value_norm", sa.String(500), nullable=False),
        sa.Column("cardinality", sa.String(8), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("thread_id", sa.String(128)),
        sa.Column("checkpoint_id", sa.String(128)),
        sa.Column("message_id", sa.String(128)),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("valid_from", Timestamp, nullable=False),
        sa.Column("valid_to", Timestamp),
        sa.Column("superseded_by", sa.String(36)),
        sa.PrimaryKeyConstraint("id", name="pk_mt_facts"),
    )
    op.create_index(
        "ux_mt_facts_current",
        "mt_facts",
        ["user_id", "subject", "attribute", "value_norm"],
        unique=True,
        sqlite_where=sa.text("superseded_by IS NULL"),
        postgresql_where=sa.text("superseded_by IS NULL"),
    )
    op.create_index("ix_mt_facts_recall", "mt_facts", ["user_id", "superseded_by", "confidence"])
    op.create_table(
        "mt_threads",
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", Document, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_active_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("thread_id", name="pk_mt_threads"),
    )
    op.create_index("ix_mt_threads_user_active", "mt_threads", ["user_id", "last_active_at"])
    op.create_table(
        "mt_archives",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("thread_id", sa.String(128)),
        sa.Column("session_id", sa.String(128)),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("data", Document, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mt_archives"),
    )
    op.create_index("ix_mt_archives_user_created", "mt_archives", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_table("mt_archives")
    op.drop_table("mt_threads")
    op.drop_table("mt_facts")
    op.drop_table("mt_profiles")
