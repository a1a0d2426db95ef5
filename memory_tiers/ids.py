"""Identifier validation: every user, session and thread id passes through here once, at the edge.

Ids end up inside Redis keys and SQL parameters, so the accepted alphabet is deliberately narrow:
letters, digits and ``. _ - : @``, starting with a letter or digit, at most 128 characters. That
excludes whitespace, control characters, Redis hash-tag braces and glob metacharacters.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from memory_tiers.errors import InvalidIdentifierError

IdKind = Literal["user_id", "session_id", "thread_id"]
ID_PARAMETERS: tuple[IdKind, ...] = ("user_id", "thread_id", "session_id")
C = TypeVar("C", bound=type)

MAX_ID_LENGTH = 128
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


def validate_id(kind: IdKind, value: object) -> str:
    """Return ``value`` if it is a valid identifier, else raise `InvalidIdentifierError`.

    Example:
        >>> validate_id("user_id", "alice@example.com")
        'alice@example.com'
        >>> validate_id("thread_id", "a b")
        Traceback (most recent call last):
        ...
        memory_tiers.errors.InvalidIdentifierError: thread_id 'a b' is invalid: use 1-128 \
letters, digits or . _ - : @, starting with a letter or digit
    """
    if value is None:
        raise InvalidIdentifierError(
            f"{kind} is missing: pass it in config['configurable'] or the runtime context"
        )
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{kind} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdentifierError(f"{kind} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdentifierError(f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidIdentifierError(
            f"{kind} {value!r} is invalid: use 1-{MAX_ID_LENGTH} letters, digits or . _ - : @, "
            "starting with a letter or digit"
        )
    return value


def id_positions(method: Callable[..., Any]) -> dict[str, int | None]:
    """Where each id parameter of ``method`` sits among its positional arguments (after self);
    None for one that can only be passed by keyword."""
    params = list(inspect.signature(method).parameters.values())[1:]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = {p.name for p in params}
    return {
        name: positional.index(name) if name in positional else None
        for name in ID_PARAMETERS
        if name in names
    }


def _validating(method: Callable[..., Any]) -> Callable[..., Any]:
    positions = id_positions(method)

    @functools.wraps(method)
    async def validated(self: Any, *args: Any, **kwargs: Any) -> Any:
        for name, index in positions.items():
            value = args[index] if index is not None and index < len(args) else kwargs.get(name)
            if value is not None:
                validate_id(name, value)  # type: ignore[arg-type]
        return await method(self, *args, **kwargs)

    return validated


def validates_ids(cls: C) -> C:
    """Class decorator: every public coroutine method validates its ``user_id``, ``thread_id``
    and ``session_id`` arguments (when given) before it runs, so each is an edge."""
    for attr in dir(cls):
        raw = inspect.getattr_static(cls, attr)
        if not attr.startswith("_") and inspect.iscoroutinefunction(raw) and id_positions(raw):
            setattr(cls, attr, _validating(raw))
    return cls
