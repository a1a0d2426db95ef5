"""LangGraph's `BaseStore` over the long-term database: ``manager.store``.

`SqlStore` keeps every item under the user it belongs to, so one user's graph can never read
another user's items, supports TTLs with a background sweeper, and serves sync and async graphs.
"""

from memory_tiers.store.errors import (
    InvalidFilterError,
    InvalidStoreKeyError,
    InvalidStoreNamespaceError,
    InvalidStoreValueError,
    StoreArgumentError,
    UnsupportedFilterOperatorError,
)
from memory_tiers.store.sql_store import SqlStore

__all__ = [
    "InvalidFilterError",
    "InvalidStoreKeyError",
    "InvalidStoreNamespaceError",
    "InvalidStoreValueError",
    "SqlStore",
    "StoreArgumentError",
    "UnsupportedFilterOperatorError",
]
