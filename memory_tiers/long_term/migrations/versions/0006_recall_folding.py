"""Recall reads only the user's rows: ``search_text`` folds diacritics (as FTS5's unicode61
tokenizer did, so "sao" still finds "São"), and a partial index finds a user's pinned current
facts, newest first, without reading the others.

Facts stored before this revision get their ``search_text`` rebuilt; only rows whose folded
text differs (those with accented letters) are written.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import re
import unicodedata
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WORD = re.compile(r"[^\W_]+")
_DIACRITICS = re.compile("[\u0300-\u036f]+")
BATCH = 1000
PINNED_INDEX = "ix_mt_facts_pinned"


def _words(subject: str, attribute: str, value: str) -> str:
    return f"{subject} {attribute.replace('_', ' ')} {value}".casefold()


def _folded(subject: str, attribute: str, value: str) -> str:
    # Frozen copy of memory_tiers.long_term.recall.search_text as of this revision.
    text = unicodedata.normalize(
        "NFC", _DIACRITICS.sub("", unicodedata.normalize("NFD", _words(subject, attribute, value)))
    )
    return f" {' '.join(_WORD.findall(text))} "


def _unfolded(subject: str, attribute: str, value: str) -> str:
    # As revision 0004 wrote it.
    return f" {' '.join(_WORD.findall(_words(subject, attribute, value)))} "


def _rewrite_search_text(search_text: Callable[[str, str, str], str]) -> None:
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
            sa.select(facts).where(facts.c.id > after).order_by(facts.c.id).limit(BATCH)
        ).all()
        if not rows:
            break
        changed = [
            {"b_id": r.id, "b_text": text}
            for r in rows
            if (text := search_text(r.subject, r.attribute, r.value)) != r.search_text
        ]
        if changed:
            bind.execute(
                facts.update()
                .where(facts.c.id == sa.bindparam("b_id"))
                .values(search_text=sa.bindparam("b_text")),
                changed,
            )
        after = rows[-1].id


def upgrade() -> None:
    _rewrite_search_text(_folded)
    # The recall statement's pinned branch states this condition as written here: SQLite uses a
    # partial index only when the query's WHERE has the index's terms.
    pinned_current = sa.and_(sa.column("pinned").is_(True), sa.column("superseded_by").is_(None))
    op.create_index(
        PINNED_INDEX,
        "mt_facts",
        # In the branch's order, so it reads at most its LIMIT and never sorts.
        ["user_id", sa.text("updated_at DESC"), "id"],
        sqlite_where=pinned_current,
        postgresql_where=pinned_current,
    )


def downgrade() -> None:
    op.drop_index(PINNED_INDEX, table_name="mt_facts")
    _rewrite_search_text(_unfolded)
