"""What changed in a thread's state between two checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage

MESSAGES = "messages"


@dataclass(frozen=True)
class StateDiff:
    """The difference between two states.

    Attributes:
        added: keys only the newer state has, with their values.
        removed: keys only the older state has.
        changed: keys whose value differs, as ``(old, new)``.
        messages_added: messages the newer state has that the older one lacks (by id).
        messages_removed: messages the older state has that the newer one lacks (by id).
    """

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    messages_added: list[BaseMessage] = field(default_factory=list)
    messages_removed: list[BaseMessage] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether the two states are the same."""
        return not (
            self.added or self.removed or self.changed or self.messages_added or self.messages_removed
        )


def _message_key(message: Any) -> Any:
    return getattr(message, "id", None) or repr(message)


def diff_values(before: dict[str, Any], after: dict[str, Any]) -> StateDiff:
    """Compare two states key by key; message lists are compared message by message.

    Example:
        >>> d = diff_values({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
        >>> d.added, d.removed, d.changed
        ({'c': 4}, {}, {'b': (2, 3)})
    """
    result = StateDiff(
        added={k: v for k, v in after.items() if k not in before},
        removed={k: v for k, v in before.items() if k not in after},
    )
    for key in before.keys() & after.keys():
        old, new = before[key], after[key]
        if key == MESSAGES and isinstance(old, list) and isinstance(new, list):
            old_keys, new_keys = {_message_key(m) for m in old}, {_message_key(m) for m in new}
            result.messages_added.extend(m for m in new if _message_key(m) not in old_keys)
            result.messages_removed.extend(m for m in old if _message_key(m) not in new_keys)
        elif old != new:
            result.changed[key] = (old, new)
    return result
