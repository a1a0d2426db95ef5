"""The built-in offline extractor: regular patterns for names, places, likes and preferences.

Patterns are grouped by language so more languages are a table entry, not new code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field

from memory_tiers.extractors.base import BaseExtractor, ExtractionContext, FactCandidate


@dataclass(frozen=True)
class Rule:
    """A pattern whose ``value`` group is the fact's value for ``attribute``."""

    attribute: str
    cardinality: Literal["one", "many"]
    pattern: re.Pattern[str]


def _rule(attribute: str, cardinality: Literal["one", "many"], pattern: str) -> Rule:
    return Rule(attribute, cardinality, re.compile(pattern, re.IGNORECASE))


# Names must be capitalised whatever the rule's flags: "I'm Alice", not "I'm tired".
_NAME = r"(?-i:(?P<value>[A-ZÀ-ÖØ-Þ][\w'-]+(?: [A-ZÀ-ÖØ-Þ][\w'-]+)?))"
_PHRASE = r"(?P<value>[^.!?,;\n]{2,80}?)"
_END = r"\s*(?:[.!?,;]|$| and | but | since | last | for )"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_APOS = "['\u2019]"  # French writes j'habite with either apostrophe
_PREP_FR = r"à |a |en |au |aux |dans "
_END_FR = rf"\s*(?:[.!?,;]|$| et | mais | depuis | car | parce | pour | l{_APOS}an | il y a )"

RULES: dict[str, tuple[Rule, ...]] = {
    "en": (
        _rule("name", "one", rf"\bmy name is {_NAME}"),
        _rule("name", "one", rf"\bcall me {_NAME}"),
        _rule("name", "one", rf"(?:^|[.!?]\s+|,\s*)(?:hi|hello|hey)?[, ]*i(?:'m| am) {_NAME}\s*(?:[.!?,]|$)"),
        _rule("location", "one", rf"\bi (?:live|am living|'m living) in {_PHRASE}{_END}"),
        _rule("location", "one", rf"\bi(?:'ve| have)? moved to {_PHRASE}{_END}"),
        _rule("likes", "many", rf"\bi (?:really )?(?:like|love|enjoy) {_PHRASE}{_END}"),
        _rule("dislikes", "many", rf"\bi (?:really )?(?:dislike|hate|don't like) {_PHRASE}{_END}"),
        _rule("preference", "many", rf"\bi (?:prefer|would rather) {_PHRASE}{_END}"),
    ),
    "fr": (
        _rule("name", "one", rf"\bje m{_APOS}appelle {_NAME}"),
        _rule("name", "one", rf"\bmon (?:prénom|nom) est {_NAME}"),
        _rule("name", "one", rf"\bappelle(?:z)?-moi {_NAME}"),
        _rule(
            "name", "one", rf"(?:^|[.!?]\s+|,\s*)(?:bonjour|salut|coucou)?[, ]*je suis {_NAME}\s*(?:[.!?,]|$)"
        ),
        _rule("location", "one", rf"\bj{_APOS}habite (?:{_PREP_FR})?{_PHRASE}{_END_FR}"),
        # "je vis" alone is also "I saw": only with a preposition, as in "je vis à Lyon".
        _rule(
            "location", "one", rf"\b(?:je vis|je réside|j{_APOS}ai déménagé) (?:{_PREP_FR}){_PHRASE}{_END_FR}"
        ),
        _rule(
            "likes",
            "many",
            rf"\bj{_APOS}(?:aime|adore)(?! pas\b)(?: bien| beaucoup| vraiment)? {_PHRASE}{_END_FR}",
        ),
        _rule(
            "dislikes", "many", rf"\b(?:je déteste|je n{_APOS}aime pas|j{_APOS}aime pas) {_PHRASE}{_END_FR}"
        ),
        _rule("preference", "many", rf"\bje préfère {_PHRASE}{_END_FR}"),
    ),
}


class RulesOptions(BaseModel):
    """Options of the `rules` extractor."""

    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    max_chars: int = Field(
        default=20_000,
        ge=1,
        description="characters of each message scanned: the rules run on the event loop, and a "
        "pasted log or document is rarely about the user",
    )


class RulesExtractor(BaseExtractor):
    """Offline, deterministic extraction from the user's own messages.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> facts = RulesExtractor().extract_text("Hi, I'm Alice. I live in Paris.")
        >>> [(f.attribute, f.value) for f in facts]
        [('name', 'Alice'), ('location', 'Paris')]
    """

    options_model = RulesOptions

    def __init__(self, options: RulesOptions | None = None) -> None:
        self.settings = options or RulesOptions()
        super().__init__(self.settings)
        unknown = [lang for lang in self.settings.languages if lang not in RULES]
        if unknown:
            raise ValueError(f"no rules for languages {unknown}; known: {sorted(RULES)}")
        self.rules = [rule for lang in self.settings.languages for rule in RULES[lang]]

    def extract_text(self, text: str, message_id: str | None = None) -> list[FactCandidate]:
        """The facts stated in one text, in the order they appear."""
        # Lone surrogates cannot be stored (they are not valid UTF-8).
        text = _LONE_SURROGATE.sub("\ufffd", text[: self.settings.max_chars])
        found: list[tuple[int, FactCandidate]] = []
        for rule in self.rules:
            for match in rule.pattern.finditer(text):
                value = match.group("value").strip()
                if not value:
                    continue
                found.append(
                    (
                        match.start("value"),
                        FactCandidate(
                            attribute=rule.attribute,
                            value=value,
                            cardinality=rule.cardinality,
                            confidence=self.settings.confidence,
                            message_id=message_id,
                        ),
                    )
                )
        return [candidate for _, candidate in sorted(found, key=lambda item: item[0])]

    def extract(self, messages: Sequence[BaseMessage], context: ExtractionContext) -> list[FactCandidate]:
        """Facts from the human messages among ``messages`` (the agent's own words are ignored)."""
        facts: list[FactCandidate] = []
        for message in messages:
            if message.type != "human":
                continue
            content = message.content
            # List content holds text blocks (or plain strings) beside images and the like.
            blocks = [content] if isinstance(content, str) else content
            for block in blocks:
                text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else block
                if isinstance(text, str):
                    facts.extend(self.extract_text(text, message.id))
        return facts
