"""Redis key layout for sessions, built in this one place from validated ids.

A user's session documents, their shadow copies and their index share the ``{user_id}`` hash
tag, so they live in one Cluster slot. The owner claim is keyed by the session id alone: it is
what lets the store refuse a session id that another user already holds. A thread's heads
(fencing) are keyed by the thread id alone, as LangGraph keys its checkpoints; a thread's run
lock carries its user's hash tag. The expiry index is one key for the whole prefix (its own
slot); its members name a user and a session, separated by a space, which no validated id
contains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\^])")
_SESSION, _SHADOW = "session", "session-shadow"


def glob_escape(text: str) -> str:
    r"""Escape Redis glob metacharacters so ``text`` matches literally in a MATCH pattern.

    Example:
        >>> print(glob_escape("a*b?[c]"))
        a\*b\?\[c\]
    """
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True)
class SessionKeys:
    """Builds the keys of one key prefix.

    Example:
        >>> keys = SessionKeys("app")
        >>> keys.session("alice", "s1")
        'app:{alice}:session:s1'
        >>> keys.shadow("alice", "s1")
        'app:{alice}:session-shadow:s1'
        >>> keys.index("alice")
        'app:{alice}:sessions'
        >>> keys.claim("s1")
        'app:session-owner:{s1}'
        >>> keys.expiry_index(), keys.expiry_member("alice", "s1")
        ('app:session-expiry', 'alice s1')
        >>> keys.parse_expiry_member("alice s1")
        ('alice', 's1')
        >>> keys.user_key_kind("alice", "app:{alice}:session-shadow:s1")
        ('session-shadow', 's1')
        >>> keys.thread_heads("t1"), keys.thread_lock("alice", "t1")
        ('app:heads:{t1}', 'app:{alice}:thread-lock:t1')
    """

    prefix: str

    def session(self, user_id: str, session_id: str) -> str:
        """The JSON document of one session."""
        return f"{self.prefix}:{{{user_id}}}:{_SESSION}:{session_id}"

    def shadow(self, user_id: str, session_id: str) -> str:
        """A copy of the session document that outlives it by the expiry grace, for archiving."""
        return f"{self.prefix}:{{{user_id}}}:{_SHADOW}:{session_id}"

    def forgotten(self, user_id: str) -> str:
        """A short-lived tombstone: the user was just forgotten (see `SessionExpiry`)."""
        return f"{self.prefix}:{{{user_id}}}:forgotten"

    def index(self, user_id: str) -> str:
        """A sorted set of the user's sessions, scored by expiry time (epoch seconds)."""
        return f"{self.prefix}:{{{user_id}}}:sessions"

    def claim(self, session_id: str) -> str:
        """The owner of a session id, held as long as the session lives."""
        return f"{self.prefix}:session-owner:{{{session_id}}}"

    def thread_heads(self, thread_id: str) -> str:
        """A hash of a thread's latest checkpoint per namespace, for fencing checkpoint writes
        (`memory_tiers.working.fencing`). Keyed by the thread alone: checkpoints are."""
        return f"{self.prefix}:heads:{{{thread_id}}}"

    def thread_lock(self, user_id: str, thread_id: str) -> str:
        """The lease lock of ``manager.threads.lock`` on one of the user's threads."""
        return f"{self.prefix}:{{{user_id}}}:thread-lock:{thread_id}"

    def expiry_index(self) -> str:
        """A sorted set of every session with a shadow, scored by its expiry time (epoch seconds)."""
        return f"{self.prefix}:session-expiry"

    @staticmethod
    def expiry_member(user_id: str, session_id: str) -> str:
        """The member naming one session in `expiry_index`."""
        return f"{user_id} {session_id}"

    @staticmethod
    def parse_expiry_member(member: str) -> tuple[str, str]:
        """``(user_id, session_id)`` of an `expiry_index` member."""
        user_id, _, session_id = member.partition(" ")
        return user_id, session_id

    def user_pattern(self, user_id: str) -> str:
        """A SCAN pattern matching every key of one user (and no other user's)."""
        return f"{glob_escape(self.prefix)}:{{{glob_escape(user_id)}}}:*"

    @staticmethod
    def expiry_member_pattern(user_id: str) -> str:
        """A ZSCAN pattern matching the user's `expiry_index` members."""
        return f"{glob_escape(user_id)} *"

    def user_key_kind(self, user_id: str, key: str) -> tuple[str, str] | None:
        """``("session" | "session-shadow", session_id)`` for a user's session or shadow key,
        None for any other key."""
        head = f"{self.prefix}:{{{user_id}}}:"
        if not key.startswith(head):
            return None
        kind, sep, session_id = key[len(head) :].partition(":")
        return (kind, session_id) if sep and kind in (_SESSION, _SHADOW) else None
