"""Fact observations lose their index on ``user_id`` alone.

The ``(user_id, observation_key)`` index (revision 0004) serves every lookup by user as well,
and while both existed, the planner of a table without statistics yet chose the narrower one for
the save's replay check and filtered the turn's keys over all of the user's observations.
Downgrading creates it again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_mt_fact_observations_user_id", table_name="mt_fact_observations")


def downgrade() -> None:
    op.create_index("ix_mt_fact_observations_user_id", "mt_fact_observations", ["user_id"])
