"""Store namespaces: validation, their text form, and the SQL that matches them.

A namespace is stored as its labels joined by ``"."`` (LangGraph forbids ``"."`` in labels, so
the join is reversible). The tenant is a column of its own, never a label, so the namespaces a
graph sees are exactly the ones it wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.store.base import MatchCondition
from sqlalchemy import ColumnElement, Select, Text, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY

from memory_tiers.store.errors import InvalidStoreNamespaceError, StoreArgumentError

SEPARATOR = "."
WILDCARD = "*"
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


def _escape_like(text: str) -> str:
    # The escape character first, so the backslashes added for % and _ stay single.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _escape_glob(text: str) -> str:
    # GLOB has no ESCAPE clause: metacharacters are wrapped in a one-character class.
    return text.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


def prefix_patterns(prefix: tuple[str, ...], dialect: str) -> tuple[str, str]:
    """The two values `under_prefix_of` binds for ``prefix``: its text, and its descendants'
    LIKE (PostgreSQL) or GLOB (SQLite) pattern, metacharacters escaped."""
    text = to_text(prefix)
    if dialect == "postgresql":
        return text, _escape_like(text) + ".%"
    return text, _escape_glob(text) + ".*"


def under_prefix_of(
    column: ColumnElement[str], text: ColumnElement[str], pattern: ColumnElement[str], dialect: str
) -> ColumnElement[bool]:
    """``column`` is the prefix ``text`` or below it, given the `prefix_patterns` as parameters.

    PostgreSQL's LIKE is case-sensitive; SQLite's is not for ASCII, so SQLite uses GLOB (as
    LangGraph's SqliteStore does).
    """
    postgres = dialect == "postgresql"
    return or_(column == text, column.like(pattern, escape="\\") if postgres else column.op("GLOB")(pattern))


def under_prefix(column: ColumnElement[str], prefix: tuple[str, ...], dialect: str) -> ColumnElement[bool]:
    """``column`` is ``prefix`` or a namespace below it (whole labels, case-sensitive, bound)."""
    text, pattern = prefix_patterns(prefix, dialect)
    return under_prefix_of(column, bindparam(None, text), bindparam(None, pattern), dialect)


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
