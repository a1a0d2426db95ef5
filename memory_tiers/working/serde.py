"""Safe deserialization of checkpoints: LangGraph's serializer, strict, with an explicit allowlist.

Whoever can write to the checkpoint database must not be able to run code in the worker that
loads a thread. LangGraph's ``JsonPlusSerializer`` by default imports and calls any
``module.attribute`` a msgpack payload names (with a warning), and unpickles ``"pickle"`` rows
when ``pickle_fallback`` is on. Every saver memory_tiers opens gets instead:

- ``pickle_fallback=False``, and a ``"pickle"`` (or any unknown) payload raises
  `UnsafeCheckpointError` instead of being decoded;
- a msgpack allowlist: LangGraph's own safe set (datetimes, UUID, Decimal, paths, LangChain
  messages and Document, ``Send``, ``Interrupt``, ``Command`` ...), memory_tiers' data models
  and the types the user lists in ``working.serde.allowed_modules``. Any other type is left as
  its serialized data (a dict, list or string): LangGraph never imports it;
- the same allowlist for LangChain ``lc: 2`` constructor envelopes (legacy ``"json"`` rows, and
  everything the Redis saver stores). On Redis the dataclass shortcut of
  ``JsonPlusRedisSerializer``, which imports and calls any dataclass an envelope names, is held
  to the same allowlist.

A checkpointer the user passes to `MemoryManager` keeps its own serializer.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.checkpoint.serde import _msgpack as lg_msgpack
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from memory_tiers.errors import ConfigError, UnsafeCheckpointError

CONFIG_KEY = "working.serde.allowed_modules"

# Types of memory_tiers that a user node may put in the graph state; LangGraph's safe set
# already covers LangChain messages and documents and LangGraph's own types.
MEMORY_TIERS_TYPES: tuple[str, ...] = (
    "memory_tiers.extractors.base:FactCandidate",
    "memory_tiers.summarizers.base:ThreadSummary",
)

# Payload kinds LangGraph's JsonPlusSerializer decodes without pickle.
_DECODED_KINDS = frozenset({"null", "bytes", "bytearray", "json", "msgpack"})

TypeKey = tuple[str, str]


def _module_classes(module_name: str) -> set[TypeKey]:
    module = importlib.import_module(module_name)
    return {
        (cls.__module__, cls.__name__)
        for cls in vars(module).values()
        if inspect.isclass(cls) and cls.__module__ == module_name
    }


def resolve_type_keys(specs: Sequence[str], key: str = CONFIG_KEY) -> frozenset[TypeKey]:
    """The ``(module, class)`` pairs ``specs`` name, as the serializer writes them.

    ``"package.module:Class"`` names one class (its real module is used, so a re-exported class
    works); ``"package.module"`` names every class defined in that module. Errors are
    `ConfigError` naming ``key.i``.

    Example:
        >>> sorted(resolve_type_keys(["datetime:datetime"]))
        [('datetime', 'datetime')]
        >>> resolve_type_keys(["os:system"])
        Traceback (most recent call last):
        ...
        memory_tiers.errors.ConfigError: working.serde.allowed_modules.0: 'os:system' is not a class...
    """
    keys: set[TypeKey] = set()
    for i, spec in enumerate(specs):
        where = f"{key}.{i}"
        module_name, _, attribute = spec.partition(":")
        try:
            if not attribute:
                keys |= _module_classes(module_name)
                continue
            cls = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
        except AttributeError:
            raise ConfigError(f"{where}: {module_name} has no {attribute!r}") from None
        if not inspect.isclass(cls):
            raise ConfigError(
                f"{where}: {spec!r} is not a class; only classes can be allowed "
                "(a function would be called with data from the database)"
            )
        keys.add((cls.__module__, cls.__name__))
    return frozenset(keys)


def allowlist(user_types: Sequence[str] = ()) -> frozenset[TypeKey]:
    """memory_tiers' own types plus ``user_types``; LangGraph adds its safe set itself."""
    return resolve_type_keys(MEMORY_TIERS_TYPES, "memory_tiers") | resolve_type_keys(user_types)


def _json_keys(keys: Iterable[tuple[str, ...]]) -> set[tuple[str, ...]]:
    # An lc:2 envelope names a class as ["package", "module", "Class"].
    return {(*key[0].split("."), key[1]) for key in keys}


class StrictSerializer(JsonPlusSerializer):
    """``JsonPlusSerializer`` without pickle, whose refusals are a typed error."""

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        if data[0] not in _DECODED_KINDS:
            raise UnsafeCheckpointError(data[0])
        return super().loads_typed(data)


def strict_serde(keys: Iterable[TypeKey]) -> StrictSerializer:
    """The serializer of the memory, SQLite and PostgreSQL savers memory_tiers opens."""
    keys = tuple(sorted(keys))
    return StrictSerializer(
        pickle_fallback=False, allowed_msgpack_modules=keys, allowed_json_modules=_json_keys(keys) or None
    )


def strict_redis_serde(keys: Iterable[TypeKey]) -> JsonPlusSerializer:
    """The serializer of the Redis saver (needs the ``redis-checkpoint`` extra)."""
    from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer

    keys = tuple(sorted(keys))
    # Envelopes the dataclass shortcut may construct: the allowlist and LangGraph's safe set.
    constructible = frozenset(_json_keys(keys) | _json_keys(lg_msgpack.SAFE_MSGPACK_TYPES))

    class StrictRedisSerializer(JsonPlusRedisSerializer):
        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            if data[0] not in _DECODED_KINDS:
                raise UnsafeCheckpointError(data[0])
            return super().loads_typed(data)

        def _constructor_class(self, obj: dict[str, Any]) -> type[Any]:
            # Upstream imports whatever class an envelope names and calls it if it is a
            # dataclass. A refusal here sends the envelope to the allowlist-gated reviver.
            ident = obj.get("id")
            if not (isinstance(ident, list) and all(isinstance(p, str) for p in ident)) or (
                tuple(ident) not in constructible
            ):
                raise ValueError(f"{ident!r} is not in the deserialization allowlist")
            return super()._constructor_class(obj)

    return StrictRedisSerializer(
        pickle_fallback=False, allowed_msgpack_modules=keys, allowed_json_modules=_json_keys(keys) or None
    )
