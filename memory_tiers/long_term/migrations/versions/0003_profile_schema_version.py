"""Versioned profile documents: the schema version each profile document was written at.

The patch counter ``version`` says how often a profile changed; ``schema_version`` says which
shape its document has, so the store can bring older documents forward with the configured
migrators (``long_term.profile.version`` / ``.migrators``). Profiles stored before this
revision get version 1, the first shape.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mt_profiles") as batch:
        batch.add_column(
            sa.Column("schema_version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )


def downgrade() -> None:
    with op.batch_alter_table("mt_profiles") as batch:
        batch.drop_column("schema_version")
