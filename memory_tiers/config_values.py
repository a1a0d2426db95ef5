"""The value types of the configuration: durations (``"30s"``, ``"1h"``) and connection URLs
whose password never shows in a repr, a log line or a dump (`mask_url`)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, PlainSerializer, SecretStr

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"1h"``, ``"30d"``, ``"500ms"`` or a number of seconds.

    Example:
        >>> parse_duration("1h")
        datetime.timedelta(seconds=3600)
        >>> parse_duration(90)
        datetime.timedelta(seconds=90)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    else:
        raise ValueError(
            f"{value!r} is not a duration: use seconds or a number with a unit "
            "(ms, s, m, h, d, w), e.g. '30s', '1h', '30d'"
        )
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
]


_QUERY_PASSWORD = re.compile(r"((?:^|&)(?:password|pass|pwd)=)[^&]*", re.IGNORECASE)
# libpq's keyword form: host=db password=s3cret (a value may be quoted, with \' escapes).
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_keyword_passwords(text: str) -> str:
    """``text`` with every libpq-style ``password=...`` value replaced by ``***``.

    Example:
        >>> mask_keyword_passwords("connect failed: host=db password=s3cret port=5432")
        'connect failed: host=db password=*** port=5432'
    """
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``.

    Example:
        >>> mask_url("postgresql://app:s3cret@db:5432/agents")
        'postgresql://app:***@db:5432/agents'
        >>> mask_url("postgresql://[::1]/db?user=app&password=s3cret")
        'postgresql://[::1]/db?user=app&password=***'
        >>> mask_url("host=db user=app password='s3 cret' dbname=agents")
        'host=db user=app password=*** dbname=agents'
    """
    if "://" not in url:
        return mask_keyword_passwords(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if parts.password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class SecretUrl(SecretStr):
    """A connection URL whose password never shows in reprs, logs or dumps."""

    def _display(self) -> str:  # type: ignore[override]
        return mask_url(self.get_secret_value())


Url = Annotated[SecretUrl, PlainSerializer(lambda url: url._display(), return_type=str)]
