"""Facts lose their full-text index: PostgreSQL's ``search_vector`` column with its GIN index and
SQLite's FTS5 table ``mt_facts_fts`` with its three triggers.

Recall and search read only the user's rows, through the user index, and match words in
``search_text`` (revision 0006); the full-text indexes were still rebuilt on every fact write
and read by nothing. Downgrading builds them again from the facts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _load_learning_revision() -> ModuleType:
    # The index's DDL stays in the revision that introduced it; this one removes and restores it.
    spec = importlib.util.spec_from_file_location(
        "_mt_0002_learning", Path(__file__).with_name("0002_learning.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_learning = _load_learning_revision()


def upgrade() -> None:
    _learning.drop_full_text(op.get_bind().dialect.name)


def downgrade() -> None:
    _learning.create_full_text(op.get_bind().dialect.name)
