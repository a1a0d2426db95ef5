"""The per-thread run lock behind ``manager.threads.lock``: one run of a thread at a time.

In Redis a lease lock (redis-py's ``Lock``: ``SET NX PX`` with a token, renewed while held,
released by compare-and-delete), so a worker that dies holding it frees it after the lease;
with the embedded fakeredis an ``asyncio.Lock`` per thread. Fencing (working/fencing.py) still
keeps the history whole if a lease runs out under a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import LockError

from memory_tiers.errors import BackendError, ThreadLockTimeoutError
from memory_tiers.observability import get_logger
from memory_tiers.session.clients import in_process
from memory_tiers.session.keys import SessionKeys
from memory_tiers.translate import translate_errors
from memory_tiers.working.fencing import TIER

logger = get_logger(__name__)


class ThreadLocks(Protocol):
    """One run at a time per thread."""

    def hold(
        self, user_id: str, thread_id: str, timeout: float
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the thread's lock for the block, waiting at most ``timeout`` seconds for it.

        Raises:
            ThreadLockTimeoutError: the lock stayed held by another run beyond ``timeout``.
        """
        ...


def _timed_out(thread_id: str, timeout: float) -> ThreadLockTimeoutError:
    return ThreadLockTimeoutError(
        f"thread {thread_id!r} is locked by another run: waited {timeout:g}s for it; retry later",
        thread_id=thread_id,
    )


class RedisThreadLocks:
    """Lease locks in Redis: a worker that dies holding one frees it after the lease."""

    def __init__(self, client: aioredis.Redis, keys: SessionKeys, *, lease: float, masked_url: str) -> None:
        self._client = client
        self._keys = keys
        self._lease = lease
        self._url = masked_url

    @asynccontextmanager
    async def hold(self, user_id: str, thread_id: str, timeout: float) -> AsyncIterator[None]:
        lock = self._client.lock(
            self._keys.thread_lock(user_id, thread_id),
            timeout=self._lease,
            sleep=0.05,
            blocking_timeout=timeout,
            thread_local=False,
        )
        with translate_errors(TIER, self._url):
            acquired = await lock.acquire()
        if not acquired:
            raise _timed_out(thread_id, timeout)
        renewer = asyncio.create_task(self._renew(lock, thread_id), name="memory-tiers-thread-lock")
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            # The block's own outcome is what the caller sees: a failed release only logs (the
            # lease frees the lock by itself).
            await self._quietly(lock.release, thread_id, "release")

    async def _renew(self, lock: Any, thread_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not await self._quietly(lock.reacquire, thread_id, "renew"):
                return

    async def _quietly(self, call: Callable[[], Any], thread_id: str, what: str) -> bool:
        """``await call()``; False once the lock is no longer ours. Other failures are logged."""
        try:
            with translate_errors(TIER, self._url):
                try:
                    await call()
                except LockError:
                    # Held past its lease: another run may have it now; fencing still keeps
                    # the history whole.
                    logger.warning(
                        "thread %r: its lock expired while held (lease %gs)", thread_id, self._lease
                    )
                    return False
        except BackendError as error:
            logger.warning("thread %r: could not %s its lock: %s", thread_id, what, error)
        return True


class LocalThreadLocks:
    """An ``asyncio.Lock`` per thread, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, user_id: str, thread_id: str, timeout: float) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(thread_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            try:
                async with asyncio.timeout(timeout):
                    await lock.acquire()
            except TimeoutError:
                raise _timed_out(thread_id, timeout) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[thread_id]


def thread_locks(client: aioredis.Redis, keys: SessionKeys, *, lease: float, masked_url: str) -> ThreadLocks:
    """Run locks on the session tier's client: in Redis, or in the process for fakeredis."""
    if in_process(client):
        return LocalThreadLocks()
    return RedisThreadLocks(client, keys, lease=lease, masked_url=masked_url)
