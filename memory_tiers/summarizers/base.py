"""The thread summarizer contract: turn an archived thread's messages into a short summary."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from memory_tiers.errors import MemoryTiersError, SummarizerError
from memory_tiers.plugins import Plugin, maybe_await
from memory_tiers.text import replace_lone_surrogates
from memory_tiers.validation import error_details

MAX_SUMMARY_CHARS = 8000
MAX_TOPICS = 20
MAX_TOPIC_CHARS = 64

Topic = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOPIC_CHARS)]


def _storable(text: str) -> str:
    # Every backend must be able to store it: no lone surrogates (not UTF-8), no NUL (PostgreSQL).
    return replace_lone_surrogates(text).replace("\x00", "")


class ThreadSummary(BaseModel):
    """What a summarizer made of a thread; it is stored in long-term memory as data.

    ``text`` is at most `MAX_SUMMARY_CHARS` characters; ``topics`` are short labels (blank and
    repeated ones are dropped, whitespace is collapsed); ``message_count`` is how many of the
    thread's messages the summary covers.

    Example:
        >>> ThreadSummary(text="Planned a trip.", topics=[" Lisbon ", "lisbon", "trip"], message_count=4)
        ThreadSummary(text='Planned a trip.', topics=['Lisbon', 'trip'], message_count=4)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(max_length=MAX_SUMMARY_CHARS)
    topics: list[Topic] = Field(default_factory=list, max_length=MAX_TOPICS)
    message_count: int = Field(ge=0)

    @field_validator("text", mode="before")
    @classmethod
    def _storable_text(cls, text: Any) -> Any:
        # Before pydantic's own check, which rejects lone surrogates outright.
        return _storable(text).strip() if isinstance(text, str) else text

    @field_validator("topics", mode="before")
    @classmethod
    def _normalize_topics(cls, topics: Any) -> Any:
        if not isinstance(topics, list | tuple):
            return topics
        kept: dict[str, str] = {}
        for topic in topics:
            if not isinstance(topic, str):
                return topics  # let the type check report it
            topic = " ".join(_storable(topic).split())
            if topic:
                kept.setdefault(topic.casefold(), topic)
        return list(kept.values())


@dataclass(frozen=True)
class SummaryContext:
    """Whose thread is summarized: summarizers may use it, never need to.

    ``profile`` is the user's long-term profile document, when the caller has it.
    """

    user_id: str
    thread_id: str
    profile: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ThreadSummarizer(Protocol):
    """Anything with an ``asummarize(messages, context)`` method returning a `ThreadSummary`.

    ``asummarize`` is normally ``async def``; a plain ``def`` is accepted too, as a sync
    ``extract`` is for extractors (`run_summarizer` awaits the result only if it is awaitable).
    A summarizer that takes options declares ``options_model``, a pydantic model its YAML
    ``options`` are validated against, and is constructed as ``Summarizer(options)``.
    """

    def asummarize(
        self, messages: Sequence[BaseMessage], context: SummaryContext
    ) -> Awaitable[ThreadSummary] | ThreadSummary:
        """Summarize a thread's messages (of every type: human, AI, tool, system)."""
        ...


class BaseSummarizer(Plugin):
    """Optional base class: declares ``options_model`` and ``deterministic``, keeps the options.

    ``deterministic = True`` promises the same summary for the same messages; the conformance
    kit (`memory_tiers.testing.check_summarizer`) then checks it.
    """

    deterministic: ClassVar[bool] = False


def as_thread_summary(result: Any, message_count: int) -> ThreadSummary:
    """``result`` as a `ThreadSummary`: one already, or a dict that validates as one.

    Raises:
        ValueError: it is not a valid summary of ``message_count`` messages; the message says
            why, without the values (they are the user's words).
    """
    try:
        summary = result if isinstance(result, ThreadSummary) else ThreadSummary.model_validate(result)
    except ValidationError as exc:
        raise ValueError(f"an invalid ThreadSummary: {error_details(exc, 'summary')}") from None
    if summary.message_count > message_count:
        raise ValueError(f"message_count={summary.message_count} for {message_count} messages")
    return summary


async def run_summarizer(
    summarizer: ThreadSummarizer, messages: Sequence[BaseMessage], context: SummaryContext
) -> ThreadSummary:
    """Call a summarizer, sync or async, and check what it returned (see `as_thread_summary`).

    Raises:
        SummarizerError: the summarizer raised (its exception is the ``__cause__``; errors of
            memory_tiers itself pass through as they are) or returned no valid summary.

    Example:
        >>> import asyncio
        >>> class Counting:
        ...     def asummarize(self, messages, context):  # a sync summarizer
        ...         return {"text": f"{len(messages)} messages", "message_count": len(messages)}
        >>> asyncio.run(run_summarizer(Counting(), [], SummaryContext("alice", "t1"))).text
        '0 messages'
    """
    name = type(summarizer).__name__
    try:
        result = await maybe_await(summarizer.asummarize(messages, context))
    except MemoryTiersError:
        raise
    except Exception as exc:
        raise SummarizerError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return as_thread_summary(result, len(messages))
    except ValueError as exc:
        raise SummarizerError(f"{name} returned {exc}") from None
