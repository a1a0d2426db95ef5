"""Recall: which current facts the load node brings into a turn, ranked in one SQL query.

A fact's score is a weighted sum of three scores in [0, 1]:

- relevance: full-text match of the fact (subject, attribute, value) with this turn's message;
  PostgreSQL ``ts_rank_cd`` over a GIN-indexed tsvector, SQLite FTS5 ``bm25``, both mapped to
  [0, 1) so that one matched word scores about 0.5;
- recency: 1 / (1 + age / half_life), where age is the time since the fact was last observed;
- confidence: the fact's consolidated confidence.

The top k facts by score come with every pinned fact (up to ``pinned_limit``) in the same query.
Flagged facts (instruction-shaped, see hygiene.py) are never recalled. With semantic recall on,
the query fetches ``semantic.candidates`` facts and cosine similarity with the message is added
in Python before the top k are kept.
"""

from __future__ import annotations

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

# Raw full-text scores map to [0, 1) as s / (s + half): a fact matching one word of the message
# scores about 0.5 on either backend (ts_rank_cd gives ~0.1 per matched word, bm25 ~2 to 4).
PG_RANK_HALF = 0.1
SQLITE_BM25_HALF = 2.0
_TERM = re.compile(r"[^\W_]{2,64}")
MAX_TERMS = 32
_FTS = table("mt_facts_fts", column("rowid"))
_RECALLED = [c for c in facts.c if c.name not in ("user_id", "embedding")]


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
    """Builds the recall subquery for one dialect and configuration."""

    def __init__(self, dialect: str, config: RecallConfig, *, semantic: bool = False) -> None:
        self.dialect = dialect
        self.config = config
        self.semantic = semantic

    def subquery(self, user_id: str, text: str | None, now: datetime) -> Subquery:
        """Pinned facts and the best-ranked others, as one subquery with a ``score`` column."""
        terms = search_terms(text)
        ranked = self._ranked(user_id, terms, now, matching_only=False).where(facts.c.pinned.is_(False))
        pinned = self._select(user_id, terms, now, matching_only=False).where(facts.c.pinned.is_(True))
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
            return self._select(user_id, terms, now, matching_only=False).where(false()).subquery("recall")
        return (branches[0] if len(branches) == 1 else union_all(*branches)).subquery("recall")

    def ranked(self, user_id: str, text: str | None, now: datetime, *, matching_only: bool) -> Subquery:
        """The user's current facts best-ranked for ``text`` (pinned or not), as a subquery;
        with ``matching_only`` only those whose words match ``text``."""
        terms = search_terms(text)
        return self._ranked(user_id, terms, now, matching_only=matching_only).limit(self._limit()).subquery()

    def _limit(self) -> int:
        return self.config.semantic.candidates if self.semantic else self.config.k

    def _ranked(self, user_id: str, terms: list[str], now: datetime, *, matching_only: bool) -> Select[Any]:
        return self._select(user_id, terms, now, matching_only=matching_only).order_by(
            literal_column("score").desc(), facts.c.updated_at.desc(), facts.c.id
        )

    def _select(self, user_id: str, terms: list[str], now: datetime, *, matching_only: bool) -> Select[Any]:
        weights = self.config.weights
        score = (
            self._relevance(terms) * weights.relevance
            + self._recency(now) * weights.recency
            + facts.c.confidence * weights.confidence
        )
        columns: list[Any] = [*_RECALLED, score.label("score")]
        if self.semantic:
            columns.append(facts.c.embedding)
        stmt = select(*columns).where(
            facts.c.user_id == user_id,
            facts.c.superseded_by.is_(None),
            facts.c.flagged.is_(False),
        )
        if not terms:
            return stmt.where(false()) if matching_only else stmt
        if self.dialect == "postgresql":
            return stmt.where(self._pg_match(terms)) if matching_only else stmt
        matches = (
            select(_FTS.c.rowid, func.bm25(literal_column("mt_facts_fts")).label("bm25"))
            .where(literal_column("mt_facts_fts").op("MATCH")(self._fts_query(terms)))
            .subquery("matches")
        )
        on = matches.c.rowid == literal_column("mt_facts.rowid")
        joined = facts.join(matches, on) if matching_only else facts.outerjoin(matches, on)
        return stmt.select_from(joined)

    def _pg_match(self, terms: list[str]) -> ColumnElement[bool]:
        query = func.to_tsquery(literal_column("'simple'::regconfig"), self._tsquery(terms))
        return literal_column("mt_facts.search_vector").op("@@")(query)

    def _relevance(self, terms: list[str]) -> ColumnElement[float]:
        if not terms:
            return literal(0.0, Float)
        if self.dialect == "postgresql":
            vector = literal_column("mt_facts.search_vector")
            query = func.to_tsquery(literal_column("'simple'::regconfig"), self._tsquery(terms))
            strength = func.ts_rank_cd(vector, query)
            return case((self._pg_match(terms), strength / (strength + PG_RANK_HALF)), else_=0.0)
        strength = func.max(-literal_column("matches.bm25", Float), 0.0)
        return func.coalesce(strength / (strength + SQLITE_BM25_HALF), 0.0)

    def _recency(self, now: datetime) -> ColumnElement[float]:
        half_life = self.config.recency_half_life.total_seconds()
        if self.dialect == "postgresql":
            at = bindparam("recall_now", now, type_=DateTime(timezone=True))
            age = func.greatest(extract("epoch", at - facts.c.updated_at), 0.0)
        else:
            # SQLite keeps datetimes as text in this layout; julianday() reads it.
            at = bindparam("recall_now", now.strftime("%Y-%m-%d %H:%M:%S.%f"), type_=String)
            age = func.max((func.julianday(at) - func.julianday(facts.c.updated_at)) * 86400.0, 0.0)
        return 1.0 / (1.0 + age / half_life)

    @staticmethod
    def _tsquery(terms: list[str]) -> Any:
        return bindparam("recall_terms", " | ".join(f"'{t}'" for t in terms), type_=String)

    @staticmethod
    def _fts_query(terms: list[str]) -> Any:
        return bindparam("recall_terms", " OR ".join(f'"{t}"' for t in terms), type_=String)


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
