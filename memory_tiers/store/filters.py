"""Compiling a LangGraph search ``filter`` into SQL terms over the item's JSON value.

Filter keys are dotted paths (``"user.level"``) whose labels match ``[A-Za-z0-9_-]{1,64}``; the
operators are ``$eq $ne $gt $gte $lt $lte``. Paths and values are always bound parameters
(PostgreSQL ``value -> :label -> ...``, SQLite ``json_extract(value, :path)``), so no part of
a filter is ever formatted into SQL.

What matches (the same on both dialects):

- a number matches JSON numbers of equal value (``1`` matches ``1.0``); ``$gt``... compare
  numerically and only ever match numbers;
- a string matches JSON strings; ``$gt``... compare code point by code point;
- ``True``/``False`` match JSON booleans only;
- ``None`` matches JSON null or a missing key (as `InMemoryStore`, which reads a missing key
  as ``None``); ``$ne`` matches everything ``$eq`` does not, missing keys included;
- a dict or list matches a JSON value equal to it (key order does not matter).

Compiling is two steps, so that a search builds its SQL once per filter shape: `parse_filter`
checks a filter and splits it into its `FilterShape` (the paths, tests and operators, which
decide the SQL) and its values (bound per call as ``:f0``, ``:f1``...); `build_terms` turns a
shape into the WHERE terms, and its result can be cached and reused for any filter of that
shape.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    not_,
    or_,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import JSONB

from memory_tiers.store.errors import InvalidFilterError, UnsupportedFilterOperatorError

KEY_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PATH_LABELS = 16
MAX_COMPARISONS = 64

Compare = Callable[[Any, Any], Any]
_COMPARE: dict[str, Compare] = {
    "$eq": operator.eq,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
Step = str | int  # an object key or an array index
Path = tuple[Step, ...]
Leaf = tuple[str, Path, str]
"""One comparison: (test, path, operator); the tests are the methods of `_PostgresJson` and
`_SqliteJson`. Each leaf with a value binds it as ``:f<n>``, n counting leaves over the shape."""
Term = tuple[bool, tuple[Leaf, ...]]
"""(negated, leaves AND-ed): one WHERE term; ``$ne`` negates the leaves of its ``$eq``."""
FilterShape = tuple[Term, ...]
_VALUELESS = frozenset({"missing_or_null", "is_null"})


def parse_key(key: object) -> Path:
    """Split a filter key into its labels, or raise `InvalidFilterError`.

    Example:
        >>> parse_key("profile.access-level")
        ('profile', 'access-level')
        >>> parse_key("a;drop table x")
        Traceback (most recent call last):
        ...
        memory_tiers.store.errors.InvalidFilterError: filter key 'a;drop table x' is invalid: ...
    """
    if not isinstance(key, str):
        raise InvalidFilterError(f"filter keys are strings, got {type(key).__name__}: {key!r}")
    labels = tuple(key.split("."))
    if len(labels) > MAX_PATH_LABELS or not all(KEY_LABEL.fullmatch(label) for label in labels):
        raise InvalidFilterError(
            f"filter key {key!r} is invalid: use up to {MAX_PATH_LABELS} dot-separated labels of "
            "1-64 letters, digits, '_' or '-'"
        )
    return labels


@dataclass(frozen=True, slots=True)
class ParsedFilter:
    """A checked filter: its shape (which decides the SQL) and the values it binds."""

    shape: FilterShape
    params: dict[str, Any]


class _PostgresJson:
    """Comparisons on ``value -> :label -> ...`` (jsonb), one bound text parameter per label.

    A text operand never indexes an array, so ``"items.0"`` means the key ``"0"`` here just as
    it does in SQLite's ``$."items"."0"`` (``#>`` with a text[] path would also index arrays).
    """

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    def _node(self, path: Path) -> ColumnElement[Any]:
        node: ColumnElement[Any] = self.column
        for label in path:
            node = node.op("->", return_type=JSONB)(bindparam(None, str(label), type_=Text))
        return node

    def _text(self, path: Path) -> ColumnElement[Any]:
        *parents, last = path
        return self._node(tuple(parents)).op("->>", return_type=Text)(bindparam(None, str(last), type_=Text))

    def _type(self, path: Path) -> ColumnElement[Any]:
        return func.jsonb_typeof(self._node(path))

    def missing_or_null(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return or_(self._node(path).is_(None), self._type(path) == "null")

    def number(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        # CASE, because PostgreSQL does not promise to test the type before it casts.
        return case(
            (self._type(path) == "number", compare(cast(self._text(path), Numeric), value)), else_=false()
        )

    def string(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        text = self._text(path).collate("C")
        return case((self._type(path) == "string", compare(text, value)), else_=false())

    def equals_json(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return func.coalesce(self._node(path) == value, false(), type_=Boolean)


class _SqliteJson:
    """Comparisons on ``json_type(value, path)`` and ``json_extract(value, path)``."""

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    @staticmethod
    def _path(path: Path) -> ColumnElement[Any]:
        # Labels were checked against KEY_LABEL, so quoting them needs no escaping.
        steps = "".join(f"[{step}]" if isinstance(step, int) else f'."{step}"' for step in path)
        return bindparam(None, "$" + steps, type_=Text)

    def _type(self, path: Path) -> ColumnElement[Any]:
        return func.json_type(self.column, self._path(path))

    def _extract(self, path: Path) -> ColumnElement[Any]:
        return func.json_extract(self.column, self._path(path))

    def missing_or_null(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return or_(self._type(path).is_(None), self._type(path) == "null")

    def is_null(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return self._type(path) == "null"

    def is_bool(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return self._type(path) == value

    def number(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        # Constants written into the SQL: a list given to in_() would be expanded per call,
        # which a statement compiled once for the driver cannot be.
        numeric = (literal_column("'integer'"), literal_column("'real'"))
        return and_(self._type(path).in_(numeric), compare(self._extract(path), value))

    def string(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return and_(self._type(path) == "text", compare(self._extract(path), value))

    def object_of_size(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        members = sql_select(func.count()).select_from(func.json_each(self.column, self._path(path)))
        return and_(self._type(path) == "object", members.scalar_subquery() == value)

    def array_of_size(self, path: Path, compare: Compare, value: Any) -> ColumnElement[bool]:
        return and_(
            self._type(path) == "array", func.json_array_length(self.column, self._path(path)) == value
        )


# The type each test's value is bound as, per dialect (None: the column's or the value's).
_BIND_TYPES: dict[str, dict[str, Any]] = {
    "postgresql": {"number": Numeric, "string": Text, "equals_json": JSONB},
    "sqlite": {"is_bool": Text, "string": Text},
}


def build_terms(shape: FilterShape, column: ColumnElement[Any], dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE terms (to be AND-ed) for filters of ``shape``, values bound as ``:f<n>``."""
    json_: _PostgresJson | _SqliteJson = (
        _PostgresJson(column) if dialect == "postgresql" else _SqliteJson(column)
    )
    types = _BIND_TYPES[dialect]
    terms: list[ColumnElement[bool]] = []
    count = 0
    for negated, leaves in shape:
        parts = []
        for test, path, op in leaves:
            value = None if test in _VALUELESS else bindparam(f"f{count}", type_=types.get(test))
            parts.append(getattr(json_, test)(path, _COMPARE[op], value))
            count += 1
        term = parts[0] if len(parts) == 1 else and_(*parts)
        terms.append(not_(func.coalesce(term, false(), type_=Boolean)) if negated else term)
    return terms


class _Parser:
    """One pass over a filter: checks it, and collects its leaves and their bound values."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"
        self.budget = MAX_COMPARISONS
        self.leaves: list[Leaf] = []
        self.params: dict[str, Any] = {}

    def spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise InvalidFilterError(f"the filter is too large: at most {MAX_COMPARISONS} comparisons")

    def leaf(self, test: str, path: Path, op: str, value: Any = None) -> None:
        if test not in _VALUELESS:
            self.params[f"f{len(self.leaves)}"] = value
        self.leaves.append((test, path, op))

    def term(self, negated: bool, fill: Callable[..., None], *args: Any, **kwargs: Any) -> Term:
        """The term of the leaves that ``fill(*args, **kwargs)`` adds."""
        start = len(self.leaves)
        fill(*args, **kwargs)
        return negated, tuple(self.leaves[start:])

    def number(self, path: Path, op: str, value: int | float, where: str) -> None:
        if not math.isfinite(value):
            raise InvalidFilterError(f"filter on {where!r}: {value!r} is not a finite number")
        if self.postgres:
            self.leaf("number", path, op, Decimal(repr(value)))
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            self.leaf("number", path, op, float(value))  # SQLite integers are 64-bit
        else:
            self.leaf("number", path, op, value)

    def equals(self, path: Path, value: Any, where: str, *, top: bool) -> None:
        self.spend()
        if value is None:
            # Inside a dict or list (SQLite), null is a value of its own: the sizes are compared too.
            self.leaf("missing_or_null" if top else "is_null", path, "$eq")
            return
        if not isinstance(value, str | int | float | Mapping | list | tuple):
            raise InvalidFilterError(f"filter on {where!r}: cannot compare with a {type(value).__name__}")
        if top:
            _check_document(value, where, depth=0)
        if self.postgres:
            # jsonb equality is this module's: numbers by value and only numbers, strings
            # bytewise, booleans, documents structurally; one lookup, no cast, per row. Bound
            # as jsonb: a text cast to jsonb in the query would be parsed again for every row
            # under a generic plan, which knows no value to fold the cast into.
            self.leaf("equals_json", path, "$eq", value)
        elif isinstance(value, bool):
            self.leaf("is_bool", path, "$eq", "true" if value else "false")
        elif isinstance(value, int | float):
            self.number(path, "$eq", value, where)
        elif isinstance(value, str):
            self.leaf("string", path, "$eq", value)
        elif isinstance(value, Mapping):
            self.leaf("object_of_size", path, "$eq", len(value))
            for k, v in value.items():
                self.equals((*path, k), v, where, top=False)
        else:
            self.leaf("array_of_size", path, "$eq", len(value))
            for i, v in enumerate(value):
                self.equals((*path, i), v, where, top=False)

    def operator(self, path: Path, op: object, operand: Any, where: str) -> Term:
        if op in ("$eq", "$ne"):
            return self.term(op == "$ne", self.equals, path, operand, where, top=True)
        if not (isinstance(op, str) and op in _COMPARE):
            raise UnsupportedFilterOperatorError(op, where)
        self.spend()
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return self.term(False, self.number, path, op, operand, where)
        if isinstance(operand, str):
            return self.term(False, self.leaf, "string", path, op, operand)
        raise InvalidFilterError(
            f"filter on {where!r}: {op} compares numbers or strings, got {type(operand).__name__}"
        )


def _check_document(value: Any, where: str, depth: int) -> None:
    """Dict and list filter values: JSON only, keys like filter key labels, bounded depth."""
    if depth > MAX_PATH_LABELS:
        raise InvalidFilterError(f"filter on {where!r}: the value is nested too deeply")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not (isinstance(key, str) and KEY_LABEL.fullmatch(key)):
                raise InvalidFilterError(
                    f"filter on {where!r}: key {key!r} inside the value must be 1-64 letters, "
                    "digits, '_' or '-'"
                )
            _check_document(item, where, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_document(item, where, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilterError(f"filter on {where!r}: {value!r} is not a finite number")
    elif isinstance(value, str):
        if "\x00" in value:  # no stored JSON text holds one on PostgreSQL, which refuses it
            raise InvalidFilterError(f"filter on {where!r}: a string value cannot contain NUL")
    elif not (value is None or isinstance(value, int)):
        raise InvalidFilterError(f"filter on {where!r}: {type(value).__name__} is not a JSON value")


def parse_filter(filter: Mapping[str, Any] | None, dialect: str) -> ParsedFilter:
    """Check a search filter and split it into its shape and its bound values.

    A dict value whose keys start with ``$`` is a set of operators; any other value is
    compared for equality, as in LangGraph's stores.

    Raises:
        InvalidFilterError: a key path or a value is malformed.
        UnsupportedFilterOperatorError: an operator is not one of the six supported.
    """
    if not filter:
        return ParsedFilter((), {})
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"a filter is a dict, got {type(filter).__name__}")
    parser = _Parser(dialect)
    terms: list[Term] = []
    for key, expected in filter.items():
        path = parse_key(key)
        if isinstance(expected, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in expected):
            terms += [parser.operator(path, op, operand, key) for op, operand in expected.items()]
        else:
            terms.append(parser.term(False, parser.equals, path, expected, key, top=True))
    return ParsedFilter(tuple(terms), parser.params)
