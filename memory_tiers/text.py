"""Reading text out of LangChain messages, made safe to encode, send and store."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from langchain_core.messages import BaseMessage

from memory_tiers.observability import get_logger

T = TypeVar("T")

logger = get_logger(__name__)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def message_text(message: BaseMessage) -> str:
    """The text of a message, whether its content is a string or a list of content blocks.

    Text blocks and plain strings are kept, one per line; images and other blocks are skipped.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> message_text(HumanMessage(content=[{"type": "text", "text": "Hi."}, "Bye.", {"type": "image"}]))
        'Hi.\\nBye.'
    """
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(parts)


def replace_lone_surrogates(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD: they cannot be encoded as UTF-8.

    Example:
        >>> replace_lone_surrogates("Par\\ud800is")
        'Par\\ufffdis'
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def newest_within(texts: Sequence[tuple[str, T]], budget: int) -> list[tuple[str, T]]:
    """The newest ``(text, tag)`` items whose texts fit in ``budget`` characters, in order.

    The oldest item kept is cut to its last characters so that the budget is used in full.

    Example:
        >>> newest_within([("old text", 1), ("middle", 2), ("new", 3)], 7)
        [('ddle', 2), ('new', 3)]
    """
    kept: list[tuple[str, T]] = []
    for text, tag in reversed(texts):
        if budget <= 0:
            break
        if len(text) > budget:
            logger.info("text cut to its last %d characters to fit the input budget", budget)
            text = text[-budget:]
        kept.append((text, tag))
        budget -= len(text)
    kept.reverse()
    return kept


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut.

    The cut falls between words when there is a space in the second half of what is kept.

    Example:
        >>> clip("a long sentence", 10)
        'a long…'
        >>> clip("unbreakable", 5)
        'unbr…'
    """
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    kept = text[: limit - 1]
    if not text[limit - 1].isspace():  # the cut is inside a word: keep only whole words
        space = kept.rfind(" ")
        if space > limit // 2:
            kept = kept[:space]
    return kept.rstrip() + "…"
