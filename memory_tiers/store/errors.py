"""The typed errors the LangGraph store raises for bad input (before anything reaches SQL)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from langgraph.store.base import InvalidNamespaceError

from memory_tiers.errors import InvalidIdentifierError, MemoryTiersError


class InvalidStoreNamespaceError(InvalidNamespaceError, InvalidIdentifierError):
    """A namespace is empty, is not a tuple of strings, or has a label LangGraph forbids.

    It is both LangGraph's `InvalidNamespaceError` (so graphs written for `InMemoryStore` catch
    it unchanged) and memory_tiers' `InvalidIdentifierError`.
    """


class StoreArgumentError(MemoryTiersError, ValueError):
    """An argument to the store is invalid: a key, a value, a TTL, a filter, a limit."""


class InvalidStoreKeyError(StoreArgumentError):
    """An item key is not a non-empty string, or contains a NUL character."""


class InvalidStoreValueError(StoreArgumentError):
    """An item value is not a JSON object that every backend can store."""


class InvalidFilterError(StoreArgumentError):
    """A search filter has a malformed key path or a value that cannot be compared."""


class UnsupportedFilterOperatorError(InvalidFilterError):
    """A search filter uses an operator other than ``$eq $ne $gt $gte $lt $lte``."""

    def __init__(self, operator: object, path: str) -> None:
        super().__init__(
            f"filter on {path!r}: operator {operator!r} is not supported; "
            "use one of $eq, $ne, $gt, $gte, $lt, $lte"
        )
        self.operator = operator


F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _ours() -> Iterator[None]:
    try:
        yield
    except InvalidStoreNamespaceError:
        raise
    except InvalidNamespaceError as exc:
        raise InvalidStoreNamespaceError(str(exc)) from None


def raising_our_namespace_error(method: F) -> F:
    """Wrap a `BaseStore` method so LangGraph's own namespace checks raise our subclass."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with _ours():
                return await method(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _ours():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
