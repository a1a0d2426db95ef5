"""Thread lifecycle: each registered thread gets a namespace (retention policies are set per
namespace), the time it was archived and the time retention last pruned its checkpoints (a
thread not active since is skipped); an index serves retention's idle-thread scans.

Threads registered before this revision are in the ``default`` namespace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mt_threads") as batch:
        batch.add_column(
            sa.Column("namespace", sa.String(128), nullable=False, server_default=sa.text("'default'"))
        )
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("pruned_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_mt_threads_namespace_status_active",
        "mt_threads",
        ["namespace", "status", "last_active_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_mt_threads_namespace_status_active", table_name="mt_threads")
    with op.batch_alter_table("mt_threads") as batch:
        batch.drop_column("pruned_at")
        batch.drop_column("archived_at")
        batch.drop_column("namespace")
