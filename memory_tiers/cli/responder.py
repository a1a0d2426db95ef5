"""The demo's agent: a deterministic, offline responder (no LLM) that answers from memory.

It reads what the memory nodes loaded (``profile``, ``facts``, ``session``), acknowledges what
the user just said (using the built-in rules extractor to notice it) and keeps a ``turns``
counter and a ``topics`` list in the session context.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from memory_tiers.extractors.rules import RulesExtractor

_QUESTION = re.compile(r"what do you (?:know|remember) about me|who am i", re.IGNORECASE)
_PHRASES = {
    "name": "your name is {}",
    "location": "you live in {}",
    "likes": "you like {}",
    "dislikes": "you dislike {}",
    "preference": "you prefer {}",
}
_ORDER = list(_PHRASES)


def phrase(attribute: str, value: Any) -> str:
    """``("likes", "jazz")`` -> ``"you like jazz"``."""
    return _PHRASES.get(attribute, f"your {attribute} is {{}}").format(value)


def join(parts: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def known(
    profile: Mapping[str, Any], facts: Iterable[Mapping[str, Any]], *, skip: Iterable[str] = ()
) -> list[str]:
    """What memory says about the user, as phrases: profile keys first, then other facts."""
    skipped = set(skip)
    parts = [phrase(key, value) for key, value in profile.items() if key not in skipped]
    seen = {(key, str(value).casefold()) for key, value in profile.items()}

    def rank(fact: Mapping[str, Any]) -> tuple[int, str, str]:
        attribute = str(fact.get("attribute"))
        position = _ORDER.index(attribute) if attribute in _ORDER else len(_ORDER)
        return position, str(fact.get("created_at") or ""), str(fact.get("value"))

    for fact in sorted(facts, key=rank):
        attribute, value = str(fact.get("attribute")), str(fact.get("value"))
        if attribute in skipped or (attribute, value.casefold()) in seen:
            continue
        seen.add((attribute, value.casefold()))
        parts.append(phrase(attribute, value))
    return parts


def _last_user_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human" and isinstance(message.content, str):
            return message.content
    return ""


class Responder:
    """The ``agent`` node. One instance per demo run: it knows which users it greeted."""

    def __init__(self, user_key: str = "user_id") -> None:
        self.user_key = user_key
        self.extractor = RulesExtractor()
        self.greeted: set[str] = set()

    async def respond(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        user = str((config.get("configurable") or {}).get(self.user_key, ""))
        first_turn = user not in self.greeted
        self.greeted.add(user)
        profile: dict[str, Any] = dict(state.get("profile") or {})
        facts: list[dict[str, Any]] = list(state.get("facts") or [])
        session: dict[str, Any] = dict(state.get("session") or {})
        text = _last_user_text(list(state["messages"]))
        heard = self.extractor.extract_text(text)

        session["turns"] = int(session.get("turns", 0)) + 1
        topics = list(session.get("topics") or [])
        topics += [c.attribute for c in heard if c.attribute not in topics]
        if _QUESTION.search(text) and "recap" not in topics:
            topics.append("recap")
        session["topics"] = topics

        reply = self._reply(text, heard, profile, facts, session, welcome=first_turn)
        return {"messages": [AIMessage(reply)], "session": session}

    def _reply(
        self,
        text: str,
        heard: list[Any],
        profile: dict[str, Any],
        facts: list[dict[str, Any]],
        session: dict[str, Any],
        *,
        welcome: bool,
    ) -> str:
        parts: list[str] = []
        name = profile.get("name")
        if welcome and name:
            recalled = known(profile, facts, skip=["name"])
            told = join(recalled) if recalled else "your name"
            parts.append(f"Welcome back, {name}! Last time you told me {told}.")
        for candidate in heard:
            if candidate.attribute == "name":
                if not (welcome and name):
                    parts.append(f"Nice to meet you, {candidate.value}!")
            else:
                parts.append(f"Noted: {phrase(candidate.attribute, candidate.value)}.")
        if _QUESTION.search(text):
            recalled = known(profile, facts)
            if recalled:
                parts.append(f"I know that {join(recalled)}.")
            else:
                parts.append("I don't know anything about you yet.")
            topics = [t for t in session.get("topics", []) if t != "recap"]
            if topics:
                parts.append(f"This session (turn {session['turns']}) we covered: {', '.join(topics)}.")
        return " ".join(parts) or "I see. Tell me more about yourself."
