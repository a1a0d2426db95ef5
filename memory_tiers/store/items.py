"""Checking keys, values and TTLs at the edge, and turning rows back into LangGraph items."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from langgraph.store.base import Item, SearchItem, TTLConfig

from memory_tiers.config import StoreConfig
from memory_tiers.store.errors import InvalidStoreKeyError, InvalidStoreValueError, StoreArgumentError
from memory_tiers.store.namespaces import from_text

MAX_VALUE_DEPTH = 200
MAX_TTL_MINUTES = 100 * 366 * 24 * 60  # a century: anything longer is "never", so say None
_MAX_BIGINT = 2**63 - 1
_MAX_INT = 2**31 - 1


def check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty string without NUL, else raise `InvalidStoreKeyError`."""
    if not isinstance(key, str):
        raise InvalidStoreKeyError(f"an item key is a string, got {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidStoreKeyError("an item key cannot be empty")
    if "\x00" in key:
        raise InvalidStoreKeyError(f"item key {key!r} contains a NUL character")
    return key


def check_value(value: object) -> dict[str, Any]:
    """Return ``value`` as a dict if every backend can store it as JSON, else raise.

    The value must be a mapping with string keys, nested dicts, lists, strings, finite numbers,
    booleans and None only; strings cannot contain NUL (PostgreSQL's jsonb refuses it).

    Example:
        >>> check_value({"score": float("nan")})
        Traceback (most recent call last):
        ...
        memory_tiers.store.errors.InvalidStoreValueError: value['score'] is nan: JSON has no NaN or infinity
    """
    if not isinstance(value, Mapping):
        raise InvalidStoreValueError(f"an item value is a dict, got {type(value).__name__}")
    _check_json(value, "value", 0)
    return dict(value)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise InvalidStoreValueError(f"{where} is nested more than {MAX_VALUE_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidStoreValueError(f"{where} contains a NUL character, which PostgreSQL cannot store")
        if not value.isascii() and _has_lone_surrogate(value):
            raise InvalidStoreValueError(f"{where} contains a lone surrogate, which is not valid unicode")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidStoreValueError(f"{where} is {value!r}: JSON has no NaN or infinity")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidStoreValueError(
                    f"{where} has a {type(key).__name__} key {key!r}: JSON keys are strings"
                )
            if "\x00" in key or (not key.isascii() and _has_lone_surrogate(key)):
                raise InvalidStoreValueError(f"{where} has a key with a NUL character or a lone surrogate")
            _check_json(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
    elif not (value is None or isinstance(value, int)):
        raise InvalidStoreValueError(f"{where} is a {type(value).__name__}, which is not JSON")


def check_ttl(ttl: object) -> float | None:
    """The TTL in minutes: None (no expiry), a positive number, or a positive timedelta."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds() / 60
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_MINUTES:
        raise StoreArgumentError(
            f"ttl is a positive number of minutes up to {MAX_TTL_MINUTES} (or None), got {ttl!r}"
        )
    return float(ttl)


def expiry(now: datetime, ttl_minutes: float | None) -> datetime | None:
    """When an item touched at ``now`` expires."""
    return None if ttl_minutes is None else now + timedelta(minutes=ttl_minutes)


def check_page(limit: object, offset: object) -> tuple[int, int]:
    """``limit`` and ``offset`` as non-negative integers, capped to SQL's 64-bit range."""
    checked = []
    for name, number in (("limit", limit), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise StoreArgumentError(f"{name} is a non-negative integer, got {number!r}")
        checked.append(min(number, _MAX_BIGINT))  # no table holds more rows: same result
    return checked[0], checked[1]


def check_max_depth(max_depth: object) -> int | None:
    """``max_depth`` as None or a positive integer (capped: no namespace is deeper)."""
    if max_depth is None:
        return None
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise StoreArgumentError(f"max_depth is a positive integer or None, got {max_depth!r}")
    return min(max_depth, _MAX_INT)


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands back naive ones, written as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_item(row: Any) -> Item:
    """An `Item` from a row with namespace, key, value, created_at and updated_at."""
    return Item(
        value=row.value,
        key=row.key,
        namespace=from_text(row.namespace),
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def to_search_item(row: Any) -> SearchItem:
    """A `SearchItem` (no score: the store has no semantic index)."""
    return SearchItem(
        namespace=from_text(row.namespace),
        key=row.key,
        value=row.value,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def ttl_config(config: StoreConfig) -> TTLConfig:
    """LangGraph's view of the store's TTL settings (minutes)."""
    default = config.default_ttl
    interval = config.sweep_interval
    return {
        "refresh_on_read": config.refresh_on_read,
        "omit_expired": True,
        "default_ttl": None if default is None else default.total_seconds() / 60,
        "sweep_interval_minutes": None if interval is None else math.ceil(interval.total_seconds() / 60),
    }
