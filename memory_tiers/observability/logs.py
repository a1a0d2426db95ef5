"""Log records that name the turn, with secrets masked.

Every memory_tiers module gets its logger from `get_logger`, which attaches `TurnContextFilter`:
a filter on the ``memory_tiers`` parent logger would not run for its children's records, and
the library installs no handler, so the filter has to sit on each module's own logger.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from memory_tiers.config_values import mask_keyword_passwords, mask_url

ID_FIELDS = ("user_id", "thread_id", "session_id")


@dataclass(frozen=True)
class LogIds:
    """The ids the current turn (or manager call) is about; any of them may be None."""

    user_id: str | None = None
    thread_id: str | None = None
    session_id: str | None = None


_NO_IDS = LogIds()
_current: ContextVar[LogIds] = ContextVar("memory_tiers_log_ids", default=_NO_IDS)


def current_ids() -> LogIds:
    """The ids bound by the innermost `bind_ids` of this context (all None outside one)."""
    return _current.get()


@contextmanager
def bind_ids(
    user_id: str | None = None, thread_id: str | None = None, session_id: str | None = None
) -> Iterator[LogIds]:
    """Name these ids on every log record (and span) of the block; ids left None keep the
    value of an enclosing block. Async-safe: tasks started in the block inherit the ids."""
    outer = _current.get()
    ids = LogIds(
        user_id if user_id is not None else outer.user_id,
        thread_id if thread_id is not None else outer.thread_id,
        session_id if session_id is not None else outer.session_id,
    )
    token = _current.set(ids)
    try:
        yield ids
    finally:
        _current.reset(token)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL and libpq keyword DSN in it replaced by ``***``.

    Example:
        >>> mask_secrets("cannot reach redis://app:s3cret@cache:6379/0 (timeout)")
        'cannot reach redis://app:***@cache:6379/0 (timeout)'
        >>> mask_secrets("bad dsn host=db password=s3cret")
        'bad dsn host=db password=***'
    """
    if "://" in text:
        text = _URL.sub(lambda match: mask_url(match.group(0)), text)
    return mask_keyword_passwords(text) if "password" in text.lower() else text


def _masked_arg(value: Any) -> Any:
    if isinstance(value, str | BaseException):
        text = str(value)
        masked = mask_secrets(text)
        if masked != text:
            return masked
    return value


class TurnContextFilter(logging.Filter):
    """Adds ``user_id``, ``thread_id`` and ``session_id`` to a record (unless ``extra=`` set
    them) and masks URL passwords in its message, arguments and traceback. Never drops one."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current.get()
        for name in ID_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, getattr(ids, name))
        if isinstance(record.msg, str):
            record.msg = mask_secrets(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _masked_arg(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_masked_arg(value) for value in record.args)
        if record.args:
            # A URL inside an argument's text (a dict, a list, a problem report) shows only once
            # formatted: mask the formatted message, losing the arguments only then.
            try:
                message = record.getMessage()
            except Exception:  # a malformed call: logging reports it when a handler formats it
                message = ""
            masked = mask_secrets(message)
            if masked != message:
                record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(self._formatter.formatException(record.exc_info))
        return True


_FILTER = TurnContextFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with `TurnContextFilter` attached: use it for every
    memory_tiers module's logger."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
