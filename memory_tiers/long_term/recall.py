"""Recall: which current facts the load node brings into a turn, ranked in one SQL query.

A fact's score is a weighted sum of three scores in [0, 1]:

- relevance: how many of this turn's words the fact (subject, attribute, value) contains, as
  m / (m + 1): the same scale on every backend, and independent of other users' facts;
- recency: 1 / (1 + age / half_life), where age is the time since the fact was last observed;
- confidence: the fact's consolidated confidence.

`search_facts` keeps the facts with at least one of the query's words and ranks them the same
way. Both read only the user's rows, through the user index: a full-text index would first find
every user's facts with those words, which at a million facts costs many times the user's own
hundred rows (migration 0007 dropped the ones the schema had). Words are matched in
``search_text``, folded the same way on both databases (case and Latin diacritics: "São" finds
"sao"), so both answer alike.

The top k facts by score come with every pinned fact (up to ``pinned_limit``) in the same query.
Flagged facts (instruction-shaped, see hygiene.py) are never recalled. With semantic recall on,
the query fetches ``semantic.candidates`` facts and cosine similarity with the message is added
in Python before the top k are kept.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    String,
    Subquery,
    bindparam,
    case,
    false,
    func,
    literal_column,
    or_,
    select,
    union_all,
)

from memory_tiers.config import RecallConfig
from memory_tiers.errors import ConfigError
from memory_tiers.long_term.schema import facts

_TERM = re.compile(r"[^\W_]{2,64}")
_WORD = re.compile(r"[^\W_]+")
# The combining marks Latin, Greek and Cyrillic letters decompose into (as FTS5's
# remove_diacritics folds them); other scripts' marks are part of their words.
_DIACRITICS = re.compile("[\u0300-\u036f]+")
MAX_TERMS = 32
_RECALLED = [c for c in facts.c if c.name not in ("user_id", "embedding", "search_text")]


def fold(text: str) -> str:
    """``text`` case-folded and without diacritics, as words are compared for recall.

    Example:
        >>> fold("São Paulo, Crème Brûlée, Straße")
        'sao paulo, creme brulee, strasse'
    """
    decomposed = unicodedata.normalize("NFD", text.casefold())
    return unicodedata.normalize("NFC", _DIACRITICS.sub("", decomposed))


def search_terms(text: str | None) -> list[str]:
    """The words of ``text`` a fact can match: letters and digits, folded (`fold`), deduplicated.

    Only these reach the recall query, and only as bound parameters.

    Example:
        >>> search_terms("Where do I live? I LIVE in São Paulo!")
        ['where', 'do', 'live', 'in', 'sao', 'paulo']
    """
    seen: dict[str, None] = {}
    for match in _TERM.finditer(fold(text or "")):
        seen.setdefault(match.group(), None)
        if len(seen) == MAX_TERMS:
            break
    return list(seen)


def search_text(subject: str, attribute: str, value: str) -> str:
    """A fact's words as stored for recall: folded (`fold`), space-separated and padded, so
    that ``" word "`` occurs in it exactly when the fact contains that word.

    Example:
        >>> search_text("user", "favourite_food", "Crème brûlée!")
        ' user favourite food creme brulee '
    """
    words = (m.group() for m in _WORD.finditer(fold(fact_text(subject, attribute, value))))
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

    Statements take every per-call value as a bound parameter (`params`) and the configuration's
    numbers as literals, so each shape (how many search terms; for a search, whether only
    matching facts count) is built once and reused: building SQLAlchemy expressions per call
    costs more than the query itself, and a statement object that is reused keeps its cache
    key, so its compiled form is found without walking it again.
    """

    def __init__(self, dialect: str, config: RecallConfig, *, semantic: bool = False) -> None:
        self.dialect = dialect
        self.config = config
        self.semantic = semantic
        self.subquery = functools.cache(self._subquery)
        self.search = functools.cache(self._search)

    def params(
        self, user_id: str, text: str | None, now: datetime, *, limit: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        """How many search terms ``text`` has (the statement's shape), and the bound values;
        ``limit`` is how many facts a `search` is to return."""
        terms = search_terms(text)
        at: Any = now if self.dialect == "postgresql" else now.strftime("%Y-%m-%d %H:%M:%S.%f")
        values: dict[str, Any] = {"recall_user": user_id, "recall_now": at}
        values |= {f"recall_t{i}": f" {term} " for i, term in enumerate(terms)}
        if limit is not None:
            values["recall_limit"] = max(limit, self._limit())
        return len(terms), values

    def _subquery(self, n_terms: int) -> Subquery:
        """Pinned facts and the best-ranked others, as one subquery with a ``score`` column."""
        ranked = self._ranked(n_terms, matching_only=False).where(facts.c.pinned.is_(False))
        # The same condition as the partial index ix_mt_facts_pinned (migration 0006), so the
        # pinned branch is an index probe, which finds nothing for most users.
        pinned = self._select(n_terms, matching_only=False).where(facts.c.pinned.is_(True))
        pinned = pinned.order_by(facts.c.updated_at.desc(), facts.c.id)
        # Each branch keeps its own ORDER BY/LIMIT by being a subquery of the union.
        branches = [
            select(branch.limit(literal_column(str(n), Integer)).subquery(name))
            for branch, n, name in (
                (ranked, self._limit(), "ranked"),
                (pinned, self.config.pinned_limit, "pins"),
            )
            if n > 0
        ]
        if not branches:
            return self._select(n_terms, matching_only=False).where(false()).subquery("recall")
        return (branches[0] if len(branches) == 1 else union_all(*branches)).subquery("recall")

    def _search(self, n_terms: int, *, matching_only: bool) -> Select[Any]:
        """The user's current facts best-ranked (pinned or not), ``recall_limit`` of them; with
        ``matching_only`` only those containing one of the terms at least."""
        limit = bindparam("recall_limit", type_=Integer)
        return self._ranked(n_terms, matching_only=matching_only).limit(limit)

    def _limit(self) -> int:
        return self.config.semantic.candidates if self.semantic else self.config.k

    def _ranked(self, n_terms: int, *, matching_only: bool) -> Select[Any]:
        return self._select(n_terms, matching_only=matching_only).order_by(
            literal_column("score").desc(), facts.c.updated_at.desc(), facts.c.id
        )

    def _select(self, n_terms: int, *, matching_only: bool) -> Select[Any]:
        weights = self.config.weights
        score = (
            self._relevance(n_terms) * self._number(weights.relevance)
            + self._recency() * self._number(weights.recency)
            + facts.c.confidence * self._number(weights.confidence)
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
        # Checked on the user's rows only (see the module docstring): never the full-text index.
        return stmt.where(or_(*(self._contains(i) for i in range(n_terms))) if n_terms else false())

    def _contains(self, term: int) -> ColumnElement[bool]:
        """Whether the fact has the ``term``-th search word (bound as ``" word "``)."""
        position = func.strpos if self.dialect == "postgresql" else func.instr
        word = bindparam(f"recall_t{term}", type_=String)
        return position(facts.c.search_text, word) > literal_column("0", Integer)

    def _relevance(self, n_terms: int) -> ColumnElement[float]:
        """m / (m + 1) for m of the message's words found in the fact: one word scores 0.5 on
        every backend, and no other user's facts weigh in (as a corpus-wide bm25 would)."""
        one, zero = self._number(1.0), self._number(0.0)
        if not n_terms:
            return zero
        found = (case((self._contains(i), one), else_=zero) for i in range(n_terms))
        matched = functools.reduce(operator.add, found)
        # m / (m + 1) written with m once: SQLite binds the terms again at each use.
        return one - one / (one + matched)

    def _recency(self) -> ColumnElement[float]:
        half_life = self.config.recency_half_life.total_seconds()
        if self.dialect == "postgresql":
            at = bindparam("recall_now", type_=DateTime(timezone=True))
            # date_part is double precision; EXTRACT is numeric (PostgreSQL 14+), whose
            # arithmetic per fact cost as much as the rest of the scan.
            age = func.greatest(
                func.date_part(literal_column("'epoch'"), at - facts.c.updated_at), self._number(0.0)
            )
        else:
            # SQLite keeps datetimes as text in this layout; julianday() reads it.
            at = bindparam("recall_now", type_=String)
            days = func.julianday(at) - func.julianday(facts.c.updated_at)
            age = func.max(days * self._number(86400.0), self._number(0.0))
        one = self._number(1.0)
        return one / (one + age / self._number(half_life))

    def _number(self, value: float) -> ColumnElement[float]:
        """``value`` written into the statement rather than bound: SQLAlchemy processes a bound
        constant again on every execution (on SQLite at each of its uses), and the recall
        statements have dozens of them. On PostgreSQL it is a double precision: a bare ``1.0``
        is numeric, and numeric arithmetic on every fact scored made the sort take twice as long.
        """
        if not math.isfinite(value):
            raise ConfigError(f"long_term.recall: {value!r} is not a finite number")
        written = repr(float(value))
        return literal_column(f"{written}::float8" if self.dialect == "postgresql" else written, Float)


def rank(
    rows: Sequence[Mapping[str, Any]],
    *,
    k: int,
    query_embedding: Sequence[float] | None,
    weight: float,
    pinned_first: bool = True,
) -> list[Mapping[str, Any]]:
    """Pinned facts first (all of them), then the top ``k`` others by score plus semantic
    similarity; with ``pinned_first=False`` the top ``k`` of all rows. ``rows`` are not changed."""
    pinned = [row for row in rows if row["pinned"]] if pinned_first else []
    others = [row for row in rows if not (pinned_first and row["pinned"])]
    if query_embedding is not None:
        others = [{**row, "score": _boosted(row, query_embedding, weight)} for row in others]
    others.sort(key=lambda row: (-float(row["score"]), row["id"]))
    return pinned + others[:k]


def _boosted(row: Mapping[str, Any], query_embedding: Sequence[float], weight: float) -> float:
    """The row's score plus its semantic similarity to the query, weighted."""
    return float(row["score"]) + weight * max(cosine(query_embedding, row["embedding"] or []), 0.0)


def load_embeddings(path: str) -> Any:
    """The ``Embeddings`` named by ``long_term.recall.semantic.embeddings``: an instance, or a
    class or function called with no arguments to make one."""
    from langchain_core.embeddings import Embeddings

    from memory_tiers.imports import import_object

    key = "long_term.recall.semantic.embeddings"
    target = import_object(path, key)
    embeddings = target if isinstance(target, Embeddings) else target() if callable(target) else None
    if not isinstance(embeddings, Embeddings):
        raise ConfigError(f"{key}: {path!r} is not a LangChain Embeddings (nor makes one)")
    return embeddings
