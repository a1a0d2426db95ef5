"""The exception hierarchy: every error memory_tiers raises derives from `MemoryTiersError`.

Driver errors (redis-py, SQLAlchemy, psycopg) are translated into `BackendError` at the tier
boundary and keep the original exception as `__cause__`.
"""

from __future__ import annotations


class MemoryTiersError(Exception):
    """Root of every error raised by memory_tiers."""


class ConfigError(MemoryTiersError):
    """The configuration is invalid; the message names the key path and what would be valid."""


class MissingDependencyError(ConfigError):
    """An optional backend was configured but its extra is not installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the '{module}' package: install it with pip install 'memory-tiers[{extra}]'"
        )
        self.extra = extra


class InvalidIdentifierError(MemoryTiersError, ValueError):
    """A user, session or thread id is missing, empty, too long or contains forbidden characters."""


class OwnershipError(MemoryTiersError, PermissionError):
    """A thread or session belongs to another user; nothing was returned or written."""


class NotFoundError(MemoryTiersError, LookupError):
    """The requested thread, session or record does not exist (for this user)."""


class StateSchemaError(MemoryTiersError, TypeError):
    """The graph state lacks what a memory node needs (for example a `messages` channel)."""


class BackendError(MemoryTiersError):
    """A storage backend failed; `__cause__` holds the driver's exception."""


class BackendUnavailableError(BackendError, ConnectionError):
    """A storage backend could not be reached within its timeout."""

    def __init__(self, tier: str, url: str, reason: str) -> None:
        super().__init__(f"{tier} tier: cannot reach {url}: {reason}")
        self.tier = tier
        self.url = url


class ThreadConflictError(BackendError):
    """Another run of the same thread got there first; this run wrote nothing more.

    Raised by the checkpointer when a run writes on top of a checkpoint the thread has moved
    past (another run advanced it since this run loaded it), and by ``manager.threads.lock``
    when the thread stays locked beyond the timeout. Like a serialization failure in SQL it is
    retriable: run the turn again, it starts from the thread's new latest checkpoint (see
    ``docs/locking.md``). It derives from `BackendError`, so code that already retries a turn
    on ``BackendError`` handles it.

    Attributes:
        thread_id: the thread.
    """

    def __init__(self, message: str, *, thread_id: str) -> None:
        super().__init__(message)
        self.thread_id = thread_id


class ThreadLockTimeoutError(ThreadConflictError, TimeoutError):
    """``manager.threads.lock`` waited its timeout for another run of the thread to finish."""


class UsageError(MemoryTiersError, RuntimeError):
    """The library was called in a way it cannot serve (for example before it was opened)."""


class SummarizerError(MemoryTiersError):
    """A thread summarizer failed or returned something that is not a summary; `__cause__` holds
    the original error (for example the chat model's)."""


class UnsafeCheckpointError(BackendError, NotImplementedError):
    """A stored checkpoint holds a payload memory_tiers refuses to decode (pickle, or a kind it
    does not know); nothing in it was executed.

    It is a ``NotImplementedError`` too, which is what LangGraph raises for an unknown kind.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"working tier: refused to decode a checkpoint payload of kind {kind!r}: memory_tiers "
            "never unpickles or runs code from stored checkpoints (see 'Safe deserialization' "
            "in docs/reliability.md)"
        )
        self.kind = kind
