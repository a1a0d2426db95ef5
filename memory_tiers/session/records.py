"""Session documents: the record type, its JSON encoding, and the id its archive row gets."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from memory_tiers.errors import OwnershipError, StateSchemaError

# Archive ids are uuid5 names in this namespace, so archiving the same session document twice
# (a retried sweep, a crash between archive and delete) lands on the same row.
_ARCHIVE_NAMESPACE = uuid.UUID("4f0c2b1e-8d3a-5e7b-9c61-2a7d5b0e3f18")


@dataclass(frozen=True)
class SessionRecord:
    """A session: its owner, the context it holds and when it was last written.

    ``expired`` is True for a session whose TTL ran out but whose context has not been archived
    yet (its shadow copy, see ``docs/sessions.md#expiry``); such a record is only returned by
    `SessionStore.export_user`.
    """

    user_id: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0
    expired: bool = False


def encode(user_id: str, data: dict[str, Any]) -> str:
    """The stored JSON document of a session.

    Raises:
        StateSchemaError: ``data`` is not JSON-serializable.
    """
    try:
        payload = json.dumps(
            {"owner": user_id, "data": data, "updated_at": time.time()},
            ensure_ascii=False,
            allow_nan=False,
        )
        payload.encode("utf-8")  # a lone surrogate would fail in the Redis client, half-written
        return payload
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise StateSchemaError(f"session values must be JSON-serializable: {exc}") from None


def decode(user_id: str, session_id: str, raw: str, *, expired: bool = False) -> SessionRecord:
    """The record stored in ``raw``.

    Raises:
        OwnershipError: the document belongs to another user.
    """
    doc = json.loads(raw)
    if doc.get("owner") != user_id:
        raise OwnershipError(f"session {session_id!r} belongs to another user")
    return SessionRecord(user_id, session_id, doc.get("data") or {}, doc.get("updated_at", 0), expired)


def archive_id(record: SessionRecord) -> str:
    """The id of the archive row of this version of a session: the same document always gets
    the same id, so archiving is idempotent.

    Example:
        >>> a = SessionRecord("alice", "s1", {"summary": "x"}, updated_at=1700000000.5)
        >>> archive_id(a) == archive_id(SessionRecord("alice", "s1", {}, 1700000000.5))
        True
        >>> archive_id(a) == archive_id(SessionRecord("bob", "s1", {}, 1700000000.5))
        False
    """
    name = f"{record.user_id}\n{record.session_id}\n{record.updated_at!r}"
    return str(uuid.uuid5(_ARCHIVE_NAMESPACE, name))
