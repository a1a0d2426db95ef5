"""Identifier validation: every user, session and thread id passes through here once, at the edge.

Ids end up inside Redis keys and SQL parameters, so the accepted alphabet is deliberately narrow:
letters, digits and ``. _ - : @``, starting with a letter or digit, at most 128 characters. That
excludes whitespace, control characters, Redis hash-tag braces and glob metacharacters.
"""

from __future__ import annotations

import re
from typing import Literal

from memory_tiers.errors import InvalidIdentifierError

IdKind = Literal["user_id", "session_id", "thread_id"]

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
