"""Retrying idempotent backend calls after transient errors, and counting each retry.

Redis commands are retried inside redis-py (its own `Retry`, so a pipeline is resent on a
fresh connection); SQL calls through tenacity, on a lost connection or a timeout only. Only
callers whose operation is idempotent use these: session reads and writes (a write SETs the
whole document), the long-term load's SELECT and a turn's save (keyed by turn).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy.exc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from memory_tiers.errors import BackendError, BackendUnavailableError

T = TypeVar("T")
OnRetry = Callable[[], None]

_FIRST_WAIT = 0.05  # seconds before the first SQL retry; each later wait doubles, up to 1 s

REDIS_RETRY_ERRORS: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]
"""What redis-py retries: a refused or reset connection, a connect or read timeout."""


class CountingRetry(Retry):
    """redis-py's `Retry` that reports every retry it is about to make to ``on_retry``.

    redis-py deep-copies the retry policy into each connection; the copies share ``on_retry``.
    """

    def __init__(self, retries: int, on_retry: OnRetry) -> None:
        super().__init__(ExponentialBackoff(), retries, tuple(REDIS_RETRY_ERRORS))
        self.on_retry = on_retry

    def __deepcopy__(self, memo: dict[int, Any]) -> CountingRetry:
        return copy.copy(self)

    async def call_with_retry(  # type: ignore[override]
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        async def counted(error: Exception, failures: int) -> None:
            if failures <= self._retries:
                self.on_retry()
            await (fail(error, failures) if with_failure_count else fail(error))

        return await super().call_with_retry(do, counted, is_retryable, with_failure_count=True)


# A transaction PostgreSQL asks to run again: a serialization failure, a deadlock.
_RERUN_STATES = ("40001", "40P01")
# asyncpg's prepared statement no longer matches the schema (a migration altered a table): it
# has dropped its cached statements, and inside a transaction it cannot re-prepare by itself.
_STALE_STATEMENTS = ("InvalidCachedStatementError", "OutdatedSchemaCacheError")


def is_transient_sql_error(error: BaseException) -> bool:
    """A translated SQL error worth retrying: a lost or refused connection, or a statement
    timeout; not pool exhaustion (retrying it would only multiply the wait). Also a transaction
    the server asks to rerun (deadlock, serialization failure) or whose prepared statements a
    schema change made stale: calls retried here are idempotent, so running them again is safe."""
    if isinstance(error, BackendUnavailableError):
        return not isinstance(error.__cause__, sqlalchemy.exc.TimeoutError)
    orig = getattr(error.__cause__, "orig", None)
    if not isinstance(error, BackendError) or orig is None:
        return False
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _RERUN_STATES or type(orig).__name__ in _STALE_STATEMENTS


async def retry_sql(call: Callable[[], Awaitable[T]], *, retries: int, on_retry: OnRetry) -> T:
    """``await call()``, retried up to ``retries`` times with exponential backoff (50 ms, 100 ms,
    ... at most 1 s) after a transient error; the last error is raised as it is.

    The first attempt runs outside tenacity: setting up its retry loop cost about a tenth of a
    whole recall on the hot path, where nearly every call succeeds at once.
    """
    try:
        return await call()
    except Exception as exc:
        if retries < 1 or not is_transient_sql_error(exc):
            raise
    on_retry()
    await asyncio.sleep(_FIRST_WAIT)

    def before_sleep(state: RetryCallState) -> None:
        on_retry()

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient_sql_error),
        stop=stop_after_attempt(retries),
        wait=wait_exponential(multiplier=2 * _FIRST_WAIT, max=1),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
