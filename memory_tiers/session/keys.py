"""Redis key layout for sessions, built in this one place from validated ids.

A user's session documents and their index share the ``{user_id}`` hash tag, so they live in
one Cluster slot. The owner claim is keyed by the session id alone: it is what lets the store
refuse a session id that another user already holds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionKeys:
    """Builds the keys of one key prefix.

    Example:
        >>> keys = SessionKeys("app")
        >>> keys.session("alice", "s1")
        'app:{alice}:session:s1'
        >>> keys.index("alice")
        'app:{alice}:sessions'
        >>> keys.claim("s1")
        'app:session-owner:{s1}'
    """

    prefix: str

    def session(self, user_id: str, session_id: str) -> str:
        """The JSON document of one session."""
        return f"{self.prefix}:{{{user_id}}}:session:{session_id}"

    def index(self, user_id: str) -> str:
        """A sorted set of the user's sessions, scored by expiry time (epoch seconds)."""
        return f"{self.prefix}:{{{user_id}}}:sessions"

    def claim(self, session_id: str) -> str:
        """The owner of a session id, held as long as the session lives."""
        return f"{self.prefix}:session-owner:{{{session_id}}}"

    def user_pattern(self, user_id: str) -> str:
        """A SCAN pattern matching every key of one user."""
        return f"{self.prefix}:{{{user_id}}}:*"
