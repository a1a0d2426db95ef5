"""The fact extractor contract: turn a turn's new messages into candidate facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from memory_tiers.long_term.schema import MAX_FACT_VALUE
from memory_tiers.plugins import Plugin, maybe_await

MAX_SUBJECT = 128


class FactCandidate(BaseModel):
    """A fact an extractor proposes; the long-term tier consolidates it.

    ``cardinality="one"`` means a new value replaces the current one (a name, a city);
    ``"many"`` means values accumulate (likes, dislikes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(default="user", min_length=1, max_length=MAX_SUBJECT)
    attribute: str = Field(min_length=1, max_length=128, pattern=r"^[a-z][a-z0-9_.-]*$")
    value: str = Field(min_length=1, max_length=MAX_FACT_VALUE)
    cardinality: Literal["one", "many"] = "many"
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    message_id: str | None = Field(default=None, max_length=128)

    @field_validator("value", "subject")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value

    @field_validator("subject")
    @classmethod
    def _normalize_subject(cls, value: str) -> str:
        # The subject is part of a fact's key: "User" and "user" are the same person.
        value = value.casefold()
        if len(value) > MAX_SUBJECT:
            raise ValueError(f"is longer than {MAX_SUBJECT} characters once case-folded")
        return value

    @field_validator("value", "subject")
    @classmethod
    def _storable(cls, value: str) -> str:
        # PostgreSQL text refuses NUL, and a lone surrogate is not UTF-8: refuse both here,
        # as a validation error, rather than as a driver error half-way through a save.
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains a lone surrogate, which is not valid unicode") from None
        return value

    @field_validator("value")
    @classmethod
    def _fits_once_folded(cls, value: str) -> str:
        # Case folding can lengthen text ("ß" -> "ss"); the folded form is stored too.
        if len(value.casefold()) > MAX_FACT_VALUE:
            raise ValueError(f"is longer than {MAX_FACT_VALUE} characters once case-folded")
        return value

    @property
    def value_norm(self) -> str:
        """The value as compared for duplicates: case-folded, whitespace collapsed."""
        return self.value.casefold()


@dataclass(frozen=True)
class ExtractionContext:
    """Who and where a turn happened: extractors may use it, never need to.

    ``existing_facts`` are the facts recalled for this turn (``state["facts"]``, dicts with
    ``subject``, ``attribute`` and ``value``), so an extractor can tell what is already known.
    """

    user_id: str
    thread_id: str | None
    session_id: str | None
    existing_facts: Sequence[Mapping[str, Any]] = ()


@runtime_checkable
class FactExtractor(Protocol):
    """Anything with an ``extract`` method (async or sync) returning `FactCandidate` items.

    An extractor that takes options declares ``options_model``, a pydantic model its YAML
    ``options`` are validated against; it is constructed as ``Extractor(options)``.
    """

    def extract(
        self, messages: Sequence[BaseMessage], context: ExtractionContext
    ) -> Any:  # list[FactCandidate] or an awaitable of it
        """Return the facts stated in ``messages``."""
        ...


class BaseExtractor(Plugin):
    """Optional base class: declares ``options_model`` and stores validated options."""


async def run_extractor(
    extractor: FactExtractor, messages: Sequence[BaseMessage], context: ExtractionContext
) -> list[FactCandidate]:
    """Call an extractor, awaiting it if it is async, and check what it returned."""
    result = await maybe_await(extractor.extract(messages, context))
    return [c if isinstance(c, FactCandidate) else FactCandidate.model_validate(c) for c in result]
