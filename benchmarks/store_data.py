"""The store benchmark's data, and the same view of it on every store.

LangGraph's stores have no notion of a user, so a user's items live under the namespace
``("users", <user>, "notes")`` there; memory_tiers' store keeps the user beside the namespace
(``manager.store.for_user(user)``, namespace ``("notes",)``). `StoreView` hides that difference:
every call names the user, and each store gets exactly the same items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from langgraph.store.base import BaseStore, PutOp

KINDS = 10
LEVELS = 7
BUCKETS = 3
SEED_BATCH = 500


def user(index: int) -> str:
    """The id of store user ``index``."""
    return f"s{index:04d}"


def key(index: int) -> str:
    """The key of item ``index`` of a user."""
    return f"n{index:05d}"


def value(owner: str, index: int) -> dict[str, Any]:
    """Item ``index`` of ``owner``: filterable fields and some text (about 0.2 kB of JSON)."""
    return {
        "kind": f"k{index % KINDS}",
        "level": index % LEVELS,
        "bucket": index % BUCKETS,
        "text": f"note {index} of {owner}: remember to follow up on this one " * 2,
        "tags": ["note", f"t{index % 13}"],
    }


def search_filter(i: int) -> dict[str, Any]:
    """Filter ``i``: kind, level and bucket, so a user's matches fit in one page of ten."""
    return {"kind": f"k{i % KINDS}", "level": (i // KINDS) % LEVELS, "bucket": i % BUCKETS}


@dataclass(frozen=True)
class StoreView:
    """One store, addressed by user."""

    name: str
    store: BaseStore
    scoped: bool
    """True: memory_tiers' store (``for_user``); False: the user is in the namespace."""

    def _target(self, owner: str) -> tuple[BaseStore, tuple[str, ...]]:
        if self.scoped:
            return self.store.for_user(owner), ("notes",)  # type: ignore[attr-defined]
        return self.store, ("users", owner, "notes")

    async def get(self, owner: str, item: str) -> Any:
        store, namespace = self._target(owner)
        return await store.aget(namespace, item)

    async def put(self, owner: str, item: str, data: dict[str, Any]) -> None:
        store, namespace = self._target(owner)
        await store.aput(namespace, item, data)

    async def search(self, owner: str, where: dict[str, Any], limit: int = 10) -> list[Any]:
        store, namespace = self._target(owner)
        return await store.asearch(namespace, filter=where, limit=limit)

    async def seed(self, users: int, items: int) -> None:
        """Put every user's items, ``SEED_BATCH`` per batch call."""
        for u in range(users):
            store, namespace = self._target(user(u))
            for ops in _chunks(PutOp(namespace, key(n), value(user(u), n)) for n in range(items)):
                await store.abatch(ops)


def _chunks(ops: Iterator[PutOp]) -> Iterator[list[PutOp]]:
    chunk: list[PutOp] = []
    for op in ops:
        chunk.append(op)
        if len(chunk) == SEED_BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
