"""Any Python value as JSON data: what a user export holds in place of checkpoint and row values.

The result always survives ``json.dumps(..., allow_nan=False)``. Conversion is one way (for
reading, not for restoring): LangChain messages become `message_to_dict`'s dicts, pydantic models
their JSON-mode dump, bytes base64, dates and times ISO strings; what has no JSON form is kept
as ``{"__type__": "module.Class", "repr": "..."}``.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import uuid
from collections.abc import Mapping
from datetime import date, time
from typing import Any

from langchain_core.messages import BaseMessage, message_to_dict
from pydantic import BaseModel

TYPE_TAG = "__type__"


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _tagged(value: Any, **fields: Any) -> dict[str, Any]:
    return {TYPE_TAG: _type_name(value), **fields}


def _key(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def to_json(value: Any) -> Any:
    """``value`` as JSON-serializable data (dicts with string keys, lists, strings, finite numbers,
    booleans and None).

    Example:
        >>> from datetime import datetime, UTC
        >>> from langchain_core.messages import HumanMessage
        >>> to_json({"at": datetime(2024, 5, 1, tzinfo=UTC), "raw": b"hi", 1: float("nan")})
        {'at': '2024-05-01T00:00:00+00:00', 'raw': {'__type__': 'bytes', 'base64': 'aGk='}, '1': \
{'__type__': 'builtins.float', 'repr': 'nan'}}
        >>> to_json([HumanMessage("hello", id="m1")])[0]["data"]["content"]
        'hello'
    """
    return _convert(value, set())


def _convert(value: Any, path: set[int]) -> Any:
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, str):  # a subclass, such as a str enum: its plain text
        return str.__str__(value)
    if isinstance(value, int):  # an int enum
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _tagged(value, repr=repr(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return {TYPE_TAG: "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if id(value) in path:  # a container holding itself
        return _tagged(value, repr="<cycle>")
    path.add(id(value))
    try:
        return _container(value, path)
    finally:
        path.discard(id(value))


def _container(value: Any, path: set[int]) -> Any:
    if isinstance(value, BaseMessage):
        return _convert(message_to_dict(value), path)
    if isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="json")
        except Exception:  # a field pydantic cannot put in JSON mode: dump it as Python objects
            dumped = value.model_dump()
        return _convert(dumped, path)
    if isinstance(value, Mapping):
        return {_key(key): _convert(item, path) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_convert(item, path) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _tagged(value, fields=_convert(fields, path))
    return _tagged(value, repr=repr(value))
