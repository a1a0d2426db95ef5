"""Store namespaces: validation, their text form, and the SQL that matches them.

A namespace is stored as its labels joined by ``"."`` (LangGraph forbids ``"."`` in labels, so
the join is reversible). The tenant is a column of its own, never a label, so the namespaces a
graph sees are exactly the ones it wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from langgraph.store.base import MatchCondition
from sqlalchemy import ColumnElement, Select, Text, and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from memory_tiers.store.errors import InvalidStoreNamespaceError, StoreArgumentError

SEPARATOR = "."
WILDCARD = "*"
_AFTER_SEPARATOR = chr(ord(SEPARATOR) + 1)  # "/": bytewise, every "prefix." string sorts below "prefix/"
_MATCH_TYPES = ("prefix", "suffix")


def validate_namespace(namespace: object, *, for_put: bool = False) -> tuple[str, ...]:
    """Return ``namespace`` as a tuple after LangGraph's checks, else raise.

    Every label must be a non-empty string without ``"."`` or NUL. A namespace an item is put
    under must also have at least one label. (``"langgraph"`` as the root label is refused by
    ``BaseStore.put`` itself, exactly as LangGraph does.)

    Raises:
        InvalidStoreNamespaceError: the namespace or one of its labels is invalid.

    Example:
        >>> validate_namespace(["memories", "alice"])
        ('memories', 'alice')
        >>> validate_namespace(("a.b",))
        Traceback (most recent call last):
        ...
        memory_tiers.store.errors.InvalidStoreNamespaceError: namespace label 'a.b' contains '.'...
    """
    if isinstance(namespace, str | bytes) or not isinstance(namespace, Sequence):
        raise InvalidStoreNamespaceError(
            f"a namespace is a tuple of strings, got {type(namespace).__name__}: {namespace!r}"
        )
    labels = tuple(namespace)
    if for_put and not labels:
        raise InvalidStoreNamespaceError("an item's namespace cannot be empty")
    for label in labels:
        if not isinstance(label, str):
            raise InvalidStoreNamespaceError(
                f"namespace labels are strings, got {type(label).__name__} in {labels!r}"
            )
        if not label:
            raise InvalidStoreNamespaceError(f"namespace labels cannot be empty: {labels!r}")
        if SEPARATOR in label:
            raise InvalidStoreNamespaceError(
                f"namespace label {label!r} contains '.', which separates labels: {labels!r}"
            )
        if "\x00" in label:
            raise InvalidStoreNamespaceError(f"namespace label {label!r} contains a NUL character")
    return labels


def validate_match_conditions(conditions: Iterable[MatchCondition] | None) -> list[MatchCondition]:
    """Check ``list_namespaces`` conditions; labels may be ``"*"`` (any one label)."""
    checked = []
    for condition in conditions or ():
        match_type, path = condition
        if match_type not in _MATCH_TYPES:
            raise StoreArgumentError(f"match type {match_type!r} is not supported; use 'prefix' or 'suffix'")
        checked.append(MatchCondition(match_type, validate_namespace(path)))
    return checked


def to_text(namespace: tuple[str, ...]) -> str:
    """The stored form of a namespace."""
    return SEPARATOR.join(namespace)


def from_text(text: str) -> tuple[str, ...]:
    """The namespace a stored text stands for."""
    return tuple(text.split(SEPARATOR))


# -- matching in SQL ----------------------------------------------------------------------


class PrefixBinds(NamedTuple):
    """The values `under_prefix_of` binds for a prefix."""

    text: str  # the prefix itself
    lower: str  # where the namespaces below it start, bytewise: the prefix and a separator
    upper: str  # where they end: the prefix and the byte after the separator


def prefix_binds(prefix: tuple[str, ...]) -> PrefixBinds:
    """The `PrefixBinds` of ``prefix``.

    Example:
        >>> prefix_binds(("memories", "50%"))
        PrefixBinds(text='memories.50%', lower='memories.50%.', upper='memories.50%/')
    """
    text = to_text(prefix)
    return PrefixBinds(text, text + SEPARATOR, text + _AFTER_SEPARATOR)


def under_prefix_of(
    column: ColumnElement[str],
    text: ColumnElement[str],
    lower: ColumnElement[str],
    upper: ColumnElement[str],
    dialect: str,
) -> ColumnElement[bool]:
    """``column`` is the prefix ``text`` or below it, given the `prefix_binds` as parameters.

    Exactly so, with no pattern to escape: bytewise, a text from ``lower`` (the prefix and
    ``"."``) up to ``upper`` (the prefix and ``"/"``, the byte after ``"."``) starts with the
    prefix and then ``"."``; ``"a-b"`` sorts below ``"a."``. Both terms bound an index scan,
    even in a plan made before the values are known (PostgreSQL's generic plans), which a LIKE
    pattern does not. PostgreSQL compares in the "C" collation, the column's own since migration
    0010, so its primary key serves the ranges whatever the database's collation; SQLite's
    default is bytewise.
    """
    bytewise = column.collate("C") if dialect == "postgresql" else column
    return or_(bytewise == text, and_(bytewise >= lower, bytewise < upper))


def under_prefix(column: ColumnElement[str], prefix: tuple[str, ...], dialect: str) -> ColumnElement[bool]:
    """``column`` is ``prefix`` or a namespace below it (whole labels, case-sensitive, bound)."""
    binds = (bindparam(None, value) for value in prefix_binds(prefix))
    return under_prefix_of(column, *binds, dialect)


def literal_head(path: tuple[str, ...]) -> tuple[str, ...]:
    """The labels of a prefix pattern before its first wildcard."""
    head: list[str] = []
    for label in path:
        if label == WILDCARD:
            break
        head.append(label)
    return tuple(head)


def match_regex(condition: MatchCondition) -> str:
    """A PostgreSQL regular expression matching a condition on whole labels.

    ``*`` matches exactly one label; a prefix ends at a separator or the end, a suffix starts
    at the beginning or a separator. Labels are escaped; the pattern is bound, never inlined.
    """
    body = r"\.".join("[^.]+" if label == WILDCARD else re.escape(label) for label in condition.path)
    return rf"(^|\.){body}$" if condition.match_type == "suffix" else rf"^{body}(\.|$)"


def matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` satisfies ``condition`` (as `InMemoryStore` decides it)."""
    path = condition.path
    if len(namespace) < len(path):
        return False
    labels = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p in (WILDCARD, n) for p, n in zip(path, labels, strict=True))


def _pg_labels(column: ColumnElement[str], max_depth: int | None) -> ColumnElement[Any]:
    # Arrays compare label by label, so ordering by this sorts namespaces the way Python sorts
    # tuples (InMemoryStore's order); COLLATE "C" makes it bytewise whatever the database's.
    labels = func.string_to_array(column.collate("C"), SEPARATOR, type_=ARRAY(Text))
    return labels if max_depth is None else labels[1:max_depth]


def pg_listing(
    column: ColumnElement[str],
    where: list[ColumnElement[bool]],
    conditions: list[MatchCondition],
    max_depth: int | None,
    limit: int,
    offset: int,
) -> Select[Any]:
    """``list_namespaces`` entirely in PostgreSQL: match, cut to depth, dedupe, sort, page.

    Returns one ``text[]`` of labels per namespace.
    """
    terms: list[Any] = []
    for condition in conditions:
        if not condition.path:
            continue  # an empty path constrains nothing, as in LangGraph's stores
        if condition.match_type == "prefix" and WILDCARD not in condition.path:
            terms.append(under_prefix(column, condition.path, "postgresql"))  # can use an index
        else:
            terms.append(column.op("~")(bindparam(None, match_regex(condition))))
    inner = select(_pg_labels(column, max_depth).label("labels")).where(*where, *terms).subquery()
    return select(inner.c.labels).distinct().order_by(inner.c.labels).limit(limit).offset(offset)


def sqlite_candidates(
    column: ColumnElement[str], where: list[ColumnElement[bool]], conditions: list[MatchCondition]
) -> Select[Any]:
    """The stored namespaces that may match, narrowed by each prefix's literal head.

    SQLite has no regular expressions, so `select_namespaces` finishes the job in Python.
    """
    heads = [literal_head(c.path) for c in conditions if c.match_type == "prefix"]
    narrowing = [under_prefix(column, head, "sqlite") for head in heads if head]
    return select(column).distinct().where(*where, *narrowing)


def select_namespaces(
    namespaces: Iterable[str],
    conditions: list[MatchCondition],
    max_depth: int | None,
    limit: int,
    offset: int,
) -> list[tuple[str, ...]]:
    """Match, cut to depth, deduplicate, sort and page stored namespaces in Python (SQLite)."""
    found = {
        ns[:max_depth] if max_depth is not None else ns
        for ns in map(from_text, namespaces)
        if all(matches(c, ns) for c in conditions if c.path)
    }
    return sorted(found)[offset : offset + limit]
