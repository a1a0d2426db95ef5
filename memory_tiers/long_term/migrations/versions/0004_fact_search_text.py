"""Relevance without other users: each fact's words in ``search_text``; replay lookups by key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WORD = re.compile(r"[^\W_]+")
BATCH = 1000


def _search_text(subject: str, attribute: str, value: str) -> str:
    # Frozen copy of memory_tiers.long_term.recall.search_text as of this revision.
    text = f"{subject} {attribute.replace('_', ' ')} {value}"
    return f" {' '.join(m.group().casefold() for m in _WORD.finditer(text))} "


def upgrade() -> None:
    with op.batch_alter_table("mt_facts") as batch:
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    facts = sa.table(
        "mt_facts",
        sa.column("id", sa.String),
        sa.column("subject", sa.String),
        sa.column("attribute", sa.String),
        sa.column("value", sa.String),
        sa.column("search_text", sa.Text),
    )
    bind = op.get_bind()
    after = ""
    while True:
        rows = bind.execute(
            sa.select(facts.c.id, facts.c.subject, facts.c.attribute, facts.c.value)
            .where(facts.c.id > after)
            .order_by(facts.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        bind.execute(
            facts.update()
            .where(facts.c.id == sa.bindparam("b_id"))
            .values(search_text=sa.bindparam("b_text")),
            [{"b_id": r.id, "b_text": _search_text(r.subject, r.attribute, r.value)} for r in rows],
        )
        after = rows[-1].id
    op.create_index(
        "ix_mt_fact_observations_user_key", "mt_fact_observations", ["user_id", "observation_key"]
    )


def downgrade() -> None:
    op.drop_index("ix_mt_fact_observations_user_key", table_name="mt_fact_observations")
    with op.batch_alter_table("mt_facts") as batch:
        batch.drop_column("search_text")
