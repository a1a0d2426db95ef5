"""Pluggable parts named in the configuration (extractors, summarizers): building and calling them.

A plugin is a built-in name or ``"package.module:Class"``; if the class declares
``options_model`` (a pydantic model) its YAML ``options`` are validated against it and it is
constructed as ``Class(options)``, otherwise as ``Class()``. Every error is a `ConfigError`
that names the key path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from memory_tiers.config import PluginSpec
from memory_tiers.errors import ConfigError, MissingDependencyError
from memory_tiers.imports import import_object
from memory_tiers.validation import error_details


class Plugin:
    """Optional base class of a plugin: declares ``options_model`` and keeps the validated options."""

    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options


async def maybe_await(result: Any) -> Any:
    """``result``, awaited if it is awaitable: plugin methods may be plain ``def`` or ``async def``."""
    if inspect.isawaitable(result):
        return await result
    return result


def build_plugin(
    spec: str | PluginSpec,
    key_path: str,
    *,
    kind: str,
    builtins: Mapping[str, Callable[..., Any]],
    protocol: type,
    contract: str,
) -> Any:
    """Instantiate one configured plugin, validating its options with its own ``options_model``.

    A plugin's constructor may raise `ConfigError` with a message that starts with a key
    relative to the plugin (``"options.model: ..."``); it is reported under ``key_path``.

    Args:
        spec: a built-in name, ``"package.module:Class"``, or a `PluginSpec` with options.
        key_path: where the spec sits in the configuration, for error messages.
        kind: what the plugin is ("extractor"), for error messages.
        builtins: the built-in plugins by name.
        protocol: a runtime-checkable protocol the instance must satisfy.
        contract: the protocol's method as users write it, e.g. ``"extract(messages, context)"``.

    Raises:
        ConfigError: unknown name, import failure, invalid options, a failing constructor, or
            an object without the ``contract`` method; the message starts with ``key_path``.

    Example:
        >>> from typing import Protocol, runtime_checkable
        >>> @runtime_checkable
        ... class Greeter(Protocol):
        ...     def greet(self) -> str: ...
        >>> class Hello:
        ...     def greet(self) -> str:
        ...         return "hello"
        >>> build_plugin("hello", "app.greeter", kind="greeter", builtins={"hello": Hello},
        ...              protocol=Greeter, contract="greet()").greet()
        'hello'
        >>> build_plugin("hi", "app.greeter", kind="greeter", builtins={"hello": Hello},
        ...              protocol=Greeter, contract="greet()")
        Traceback (most recent call last):
        ...
        memory_tiers.errors.ConfigError: app.greeter: unknown greeter 'hi'; use one of ['hello'] or ...
    """
    if isinstance(spec, str):
        spec = PluginSpec(use=spec)
    if spec.use in builtins:
        factory = builtins[spec.use]
    elif ":" in spec.use:
        factory = import_object(spec.use, key_path)
    else:
        raise ConfigError(
            f"{key_path}: unknown {kind} {spec.use!r}; "
            f"use one of {sorted(builtins)} or 'package.module:Class'"
        )
    options_model: type[BaseModel] | None = getattr(factory, "options_model", None)
    try:
        if options_model is not None:
            plugin = factory(options_model.model_validate(spec.options))
        elif spec.options:
            raise ConfigError(f"{key_path}.options: {spec.use} takes no options")
        else:
            plugin = factory()
    except ValidationError as exc:
        raise ConfigError(f"{key_path}.options: {error_details(exc)}") from None
    except ConfigError as exc:
        message = str(exc)
        if isinstance(exc, MissingDependencyError) or message.startswith(key_path):
            raise
        prefix = f"{key_path}." if message.startswith("options") else f"{key_path}: "
        raise ConfigError(prefix + message) from exc.__cause__
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key_path}: cannot create {spec.use}: {exc}") from None
    if not isinstance(plugin, protocol):
        raise ConfigError(f"{key_path}: {spec.use} has no {contract} method")
    return plugin
