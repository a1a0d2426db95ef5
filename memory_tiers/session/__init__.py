"""Short-term memory: session context in Redis with a sliding TTL, archived on expiry."""

from memory_tiers.session.expiry import SweepReport
from memory_tiers.session.keys import SessionKeys
from memory_tiers.session.store import SessionRecord, SessionStore

__all__ = ["SessionKeys", "SessionRecord", "SessionStore", "SweepReport"]
