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
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
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
_RANGE: dict[str, Compare] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
Step = str | int  # an object key or an array index
Path = tuple[Step, ...]


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


class _Budget:
    """Bounds how many comparisons one filter may expand into."""

    def __init__(self) -> None:
        self.left = MAX_COMPARISONS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise InvalidFilterError(f"the filter is too large: at most {MAX_COMPARISONS} comparisons")


class _PostgresJson:
    """Comparisons on ``value -> :label -> ...`` (jsonb), one bound text parameter per label.

    A text operand never indexes an array, so ``"items.0"`` means the key ``"0"`` here just as
    it does in SQLite's ``$."items"."0"`` (``#>`` with a text[] path would also index arrays).
    """

    structural_equality = True

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

    def missing_or_null(self, path: Path) -> ColumnElement[bool]:
        return or_(self._node(path).is_(None), self._type(path) == "null")

    def is_bool(self, path: Path, value: bool) -> ColumnElement[bool]:
        return and_(self._type(path) == "boolean", self._text(path) == ("true" if value else "false"))

    def number(self, path: Path, compare: Compare, value: int | float) -> ColumnElement[bool]:
        # CASE, because PostgreSQL does not promise to test the type before it casts.
        number = bindparam(None, Decimal(repr(value)), type_=Numeric)
        return case(
            (self._type(path) == "number", compare(cast(self._text(path), Numeric), number)), else_=false()
        )

    def string(self, path: Path, compare: Compare, value: str) -> ColumnElement[bool]:
        text = self._text(path).collate("C")
        return case(
            (self._type(path) == "string", compare(text, bindparam(None, value, type_=Text))), else_=false()
        )

    def equals_json(self, path: Path, value: Any) -> ColumnElement[bool]:
        document = cast(bindparam(None, json.dumps(value, allow_nan=False), type_=Text), JSONB)
        return func.coalesce(self._node(path) == document, false(), type_=Boolean)


class _SqliteJson:
    """Comparisons on ``json_type(value, path)`` and ``json_extract(value, path)``."""

    structural_equality = False

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

    def missing_or_null(self, path: Path) -> ColumnElement[bool]:
        return or_(self._type(path).is_(None), self._type(path) == "null")

    def is_null(self, path: Path) -> ColumnElement[bool]:
        return self._type(path) == "null"

    def is_bool(self, path: Path, value: bool) -> ColumnElement[bool]:
        return self._type(path) == ("true" if value else "false")

    def number(self, path: Path, compare: Compare, value: int | float) -> ColumnElement[bool]:
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            value = float(value)  # SQLite integers are 64-bit
        return and_(
            self._type(path).in_(["integer", "real"]), compare(self._extract(path), bindparam(None, value))
        )

    def string(self, path: Path, compare: Compare, value: str) -> ColumnElement[bool]:
        return and_(
            self._type(path) == "text", compare(self._extract(path), bindparam(None, value, type_=Text))
        )

    def object_of_size(self, path: Path, size: int) -> ColumnElement[bool]:
        members = sql_select(func.count()).select_from(func.json_each(self.column, self._path(path)))
        return and_(self._type(path) == "object", members.scalar_subquery() == size)

    def array_of_size(self, path: Path, size: int) -> ColumnElement[bool]:
        return and_(
            self._type(path) == "array", func.json_array_length(self.column, self._path(path)) == size
        )


Json = _PostgresJson | _SqliteJson


def _check_number(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise InvalidFilterError(f"filter on {where!r}: {value!r} is not a finite number")


def _equals(
    json_: Json, path: Path, value: Any, budget: _Budget, where: str, *, top: bool
) -> ColumnElement[bool]:
    budget.spend()
    if value is None:
        if top:
            return json_.missing_or_null(path)
        # Inside a dict or list, null is a value of its own (the sizes are compared too).
        assert isinstance(json_, _SqliteJson)
        return json_.is_null(path)
    if isinstance(value, bool):
        return json_.is_bool(path, value)
    if isinstance(value, int | float):
        _check_number(value, where)
        return json_.number(path, operator.eq, value)
    if isinstance(value, str):
        return json_.string(path, operator.eq, value)
    if isinstance(value, Mapping | list | tuple):
        _check_document(value, where, depth=0)
        if isinstance(json_, _PostgresJson):
            return json_.equals_json(path, value)
        if isinstance(value, Mapping):
            parts = [json_.object_of_size(path, len(value))]
            parts += [_equals(json_, (*path, k), v, budget, where, top=False) for k, v in value.items()]
        else:
            parts = [json_.array_of_size(path, len(value))]
            parts += [_equals(json_, (*path, i), v, budget, where, top=False) for i, v in enumerate(value)]
        return and_(*parts)
    raise InvalidFilterError(f"filter on {where!r}: cannot compare with a {type(value).__name__}")


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
        _check_number(value, where)
    elif not (value is None or isinstance(value, str | int)):
        raise InvalidFilterError(f"filter on {where!r}: {type(value).__name__} is not a JSON value")


def _operator(
    json_: Json, path: Path, op: object, operand: Any, budget: _Budget, where: str
) -> ColumnElement[bool]:
    if op == "$eq":
        return _equals(json_, path, operand, budget, where, top=True)
    if op == "$ne":
        equal = _equals(json_, path, operand, budget, where, top=True)
        return not_(func.coalesce(equal, false(), type_=Boolean))
    compare = _RANGE.get(op) if isinstance(op, str) else None
    if compare is None:
        raise UnsupportedFilterOperatorError(op, where)
    budget.spend()
    if isinstance(operand, int | float) and not isinstance(operand, bool):
        _check_number(operand, where)
        return json_.number(path, compare, operand)
    if isinstance(operand, str):
        return json_.string(path, compare, operand)
    raise InvalidFilterError(
        f"filter on {where!r}: {op} compares numbers or strings, got {type(operand).__name__}"
    )


def compile_filter(
    filter: Mapping[str, Any] | None, column: ColumnElement[Any], dialect: str
) -> list[ColumnElement[bool]]:
    """The WHERE terms (to be AND-ed) for a search filter on ``column``.

    A dict value whose keys start with ``$`` is a set of operators; any other value is
    compared for equality, as in LangGraph's stores.

    Raises:
        InvalidFilterError: a key path or a value is malformed.
        UnsupportedFilterOperatorError: an operator is not one of the six supported.
    """
    if not filter:
        return []
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(f"a filter is a dict, got {type(filter).__name__}")
    json_: Json = _PostgresJson(column) if dialect == "postgresql" else _SqliteJson(column)
    budget = _Budget()
    terms: list[ColumnElement[bool]] = []
    for key, expected in filter.items():
        path = parse_key(key)
        if isinstance(expected, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in expected):
            terms += [_operator(json_, path, op, operand, budget, key) for op, operand in expected.items()]
        else:
            terms.append(_equals(json_, path, expected, budget, key, top=True))
    return terms
