"""Recall: which current facts the load node brings into a turn, ranked in one SQL query.

A fact's score is a weighted sum of three scores in [0, 1]:

- relevance: how many of this turn's words the fact (subject, attribute, value) contains, as
  m / (m + 1): the same scale on every backend, and independent of other users' facts;
- recency: 1 / (1 + age / half_life), where age is the time since the fact was last observed;
- confidence: the fact's consolidated confidence.

`search_facts` finds the facts matching a query through the full-text index (PostgreSQL
tsvector @@ tsquery on a GIN index, SQLite FTS5) and ranks them the same way.

The top k facts by score come with every pinned fact (up to ``pinned_limit``) in the same query.
Flagged facts (instruction-shaped, see hygiene.py) are never recalled. With semantic recall on,
the query fetches ``semantic.candidates`` facts and cosine similarity with the message is added
in Python before the top k are kept.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Select,
    String,
    Subquery,
    bindparam,
    case,
    column,
    extract,
    false,
    func,
    literal,
    literal_column,
    select,
    table,
    union_all,
)

from memory_tiers.config import RecallConfig
from memory_tiers.long_term.schema import facts

_TERM = re.compile(r"[^\W_]{2,64}")
_WORD = re.compile(r"[^\W_]+")
MAX_TERMS = 32
_FTS = table("mt_facts_fts", column("rowid"))
_RECALLED = [c for c in facts.c if c.name not in ("user_id", "embedding", "search_text")]


def search_terms(text: str | None) -> list[str]:
    """The words of ``text`` a fact can match: letters and digits, case-folded, deduplicated.

    Only these reach the full-text query, and only as a bound parameter.

    Example:
        >>> search_terms("Where do I live? I LIVE in São Paulo!")
        ['where', 'do', 'live', 'in', 'são', 'paulo']
    """
    seen: dict[str, None] = {}
    for match in _TERM.finditer(text or ""):
        seen.setdefault(match.group().casefold(), None)
        if len(seen) == MAX_TERMS:
            break
    return list(seen)


def search_text(subject: str, attribute: str, value: str) -> str:
    """A fact's words as stored for relevance scoring: case-folded, space-separated and padded,
    so that ``" word "`` occurs in it exactly when the fact contains that word.

    Example:
        >>> search_text("user", "favourite_food", "Crème brûlée!")
        ' user favourite food crème brûlée '
    """
    words = (m.group().casefold() for m in _WORD.finditer(fact_text(subject, attribute, value)))
    return f" {' '.join(words)} "


def fact_text(subject: str, attribute: str, value: str) -> str:
    """The text a fact is indexed and embedded by."""
    return f"{subject} {attribute.replace('_', ' ')} {value}"


def cosine(left: Sequence[float], right: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is empty or zero)."""
    if not left or not right or len(left) != len(right):
        return 0.0
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norm = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norm if norm else 0.0


class RecallQuery:
    """Builds the recall statements for one dialect and configuration.

    Statements take every value as a bound parameter (`params`), so each shape (how many search
    terms) is built once and reused: building SQLAlchemy expressions per turn costs more than
    the query itself.
    """

    def __init__(self, dialect: str, config: RecallConfig, *, semantic: bool = False) -> None:
        self.dialect = dialect
        self.config = config
        self.semantic = semantic
        self.subquery = functools.cache(self._subquery)
        self.ranked = functools.cache(self._ranked_subquery)

    def params(self, user_id: str, text: str | None, now: datetime) -> tuple[int, dict[str, Any]]:
        """How many search terms ``text`` has (the statement's shape), and the bound values."""
        terms = search_terms(text)
        at: Any = now if self.dialect == "postgresql" else now.strftime("%Y-%m-%d %H:%M:%S.%f")
        values: dict[str, Any] = {"recall_user": user_id, "recall_now": at}
        values |= {f"recall_t{i}": f" {term} " for i, term in enumerate(terms)}
        if terms:
            joined = " | ".join(f"'{t}'" for t in terms) if self.dialect == "postgresql" else None
            values["recall_terms"] = joined or " OR ".join(f'"{t}"' for t in terms)
        return len(terms), values

    def _subquery(self, n_terms: int) -> Subquery:
        """Pinned facts and the best-ranked others, as one subquery with a ``score`` column."""
        ranked = self._ranked(n_terms, matching_only=False).where(facts.c.pinned.is_(False))
        pinned = self._select(n_terms, matching_only=False).where(facts.c.pinned.is_(True))
        pinned = pinned.order_by(facts.c.updated_at.desc(), facts.c.id)
        # Each branch keeps its own ORDER BY/LIMIT by being a subquery of the union.
        branches = [
            select(branch.limit(n).subquery(name))
            for branch, n, name in (
                (ranked, self._limit(), "ranked"),
                (pinned, self.config.pinned_limit, "pins"),
            )
            if n > 0
        ]
        if not branches:
            return self._select(n_terms, matching_only=False).where(false()).subquery("recall")
        return (branches[0] if len(branches) == 1 else union_all(*branches)).subquery("recall")

    def _ranked_subquery(self, n_terms: int, *, matching_only: bool, limit: int | None = None) -> Subquery:
        """The user's current facts best-ranked (pinned or not), as a subquery; with
        ``matching_only`` only those the full-text index finds for the terms."""
        stmt = self._ranked(n_terms, matching_only=matching_only)
        return stmt.limit(max(limit or 0, self._limit())).subquery()

    def _limit(self) -> int:
        return self.config.semantic.candidates if self.semantic else self.config.k

    def _ranked(self, n_terms: int, *, matching_only: bool) -> Select[Any]:
        return self._select(n_terms, matching_only=matching_only).order_by(
            literal_column("score").desc(), facts.c.updated_at.desc(), facts.c.id
        )

    def _select(self, n_terms: int, *, matching_only: bool) -> Select[Any]:
        weights = self.config.weights
        score = (
            self._relevance(n_terms) * weights.relevance
            + self._recency() * weights.recency
            + facts.c.confidence * weights.confidence
        )
        columns: list[Any] = [*_RECALLED, score.label("score")]
        if self.semantic:
            columns.append(facts.c.embedding)
        stmt = select(*columns).where(
            facts.c.user_id == bindparam("recall_user", type_=String),
            facts.c.superseded_by.is_(None),
            facts.c.flagged.is_(False),
        )
        if not matching_only:
            return stmt
        return stmt.where(self._full_text_match()) if n_terms else stmt.where(false())

    def _full_text_match(self) -> ColumnElement[bool]:
        """The full-text index's answer: PostgreSQL tsvector @@ tsquery (GIN), SQLite FTS5 MATCH."""
        terms = bindparam("recall_terms", type_=String)
        if self.dialect == "postgresql":
            query = func.to_tsquery(literal_column("'simple'::regconfig"), terms)
            return literal_column("mt_facts.search_vector").op("@@")(query)
        matching = select(_FTS.c.rowid).where(literal_column("mt_facts_fts").op("MATCH")(terms))
        return literal_column("mt_facts.rowid").in_(matching)

    def _relevance(self, n_terms: int) -> ColumnElement[float]:
        """m / (m + 1) for m of the message's words found in the fact: one word scores 0.5 on
        every backend, and no other user's facts weigh in (as a corpus-wide bm25 would)."""
        if not n_terms:
            return literal(0.0, Float)
        position = func.strpos if self.dialect == "postgresql" else func.instr
        matched: Any = sum(
            case((position(facts.c.search_text, bindparam(f"recall_t{i}", type_=String)) > 0, 1.0), else_=0.0)
            for i in range(n_terms)
        )
        return matched / (matched + 1.0)

    def _recency(self) -> ColumnElement[float]:
        half_life = self.config.recency_half_life.total_seconds()
        if self.dialect == "postgresql":
            at = bindparam("recall_now", type_=DateTime(timezone=True))
            age = func.greatest(extract("epoch", at - facts.c.updated_at), 0.0)
        else:
            # SQLite keeps datetimes as text in this layout; julianday() reads it.
            at = bindparam("recall_now", type_=String)
            age = func.max((func.julianday(at) - func.julianday(facts.c.updated_at)) * 86400.0, 0.0)
        return 1.0 / (1.0 + age / half_life)


def rank(
    rows: Sequence[dict[str, Any]],
    *,
    k: int,
    query_embedding: Sequence[float] | None,
    weight: float,
    pinned_first: bool = True,
) -> list[dict[str, Any]]:
    """Pinned facts first (all of them), then the top ``k`` others by score plus semantic
    similarity; with ``pinned_first=False`` the top ``k`` of all rows."""
    pinned = [row for row in rows if row["pinned"]] if pinned_first else []
    others = [dict(row) for row in rows if not (pinned_first and row["pinned"])]
    if query_embedding is not None:
        for row in others:
            similarity = max(cosine(query_embedding, row.get("embedding") or []), 0.0)
            row["score"] = float(row["score"]) + weight * similarity
    others.sort(key=lambda row: (-float(row["score"]), row["id"]))
    return pinned + others[:k]


def load_embeddings(path: str) -> Any:
    """The ``Embeddings`` named by ``long_term.recall.semantic.embeddings``: an instance, or a
    class or function called with no arguments to make one."""
    from langchain_core.embeddings import Embeddings

    from memory_tiers.errors import ConfigError
    from memory_tiers.imports import import_object

    key = "long_term.recall.semantic.embeddings"
    target = import_object(path, key)
    embeddings = target if isinstance(target, Embeddings) else target() if callable(target) else None
    if not isinstance(embeddings, Embeddings):
        raise ConfigError(f"{key}: {path!r} is not a LangChain Embeddings (nor makes one)")
    return embeddings
