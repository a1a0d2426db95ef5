"""The LangChain chat model behind an LLM-based plugin (the `llm` extractor and summarizer).

A plugin gets its model as an instance from Python, or from YAML as an ``init_chat_model``
string (``model: "openai:gpt-4o-mini"``, the ``llm`` extra) or an import path
(``chat_model: "package.module:attribute"``). Nothing here calls the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memory_tiers.errors import ConfigError, MissingDependencyError
from memory_tiers.imports import import_object

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

OptionsT = TypeVar("OptionsT", bound="ChatModelOptions")


class ChatModelOptions(BaseModel):
    """The options that choose a plugin's chat model; LLM plugins' options extend this."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        min_length=1,
        description="an init_chat_model string such as 'openai:gpt-4o-mini' (needs memory-tiers[llm] "
        "and the provider's package)",
    )
    chat_model: str | None = Field(
        default=None,
        min_length=1,
        description="instead of model: 'package.module:attribute' naming a chat model instance, or a "
        "class or function called with no arguments to make one",
    )
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for init_chat_model, e.g. temperature"
    )
    method: Literal["function_calling", "json_schema", "json_mode"] | None = Field(
        default=None, description="with_structured_output method; None: the provider's default"
    )

    @model_validator(mode="after")
    def _one_model(self) -> ChatModelOptions:
        if self.model is not None and self.chat_model is not None:
            raise ValueError("give model or chat_model, not both")
        return self


def merge_options(
    options_model: type[OptionsT],
    options: OptionsT | None,
    model: BaseChatModel | str | None,
    **overrides: Any,
) -> OptionsT:
    """The plugin's effective options: ``options``, then a ``model`` given in code, then overrides.

    Overrides that are None are left out. A model instance given in code replaces whatever
    model the options named.

    Example:
        >>> merge_options(ChatModelOptions, ChatModelOptions(chat_model="a:b"), "openai:x").model
        'openai:x'
    """
    base = options.model_dump(exclude_unset=True) if options is not None else {}
    if model is not None:
        base.pop("chat_model", None)
        base["model"] = model if isinstance(model, str) else None
    base.update({key: value for key, value in overrides.items() if value is not None})
    return options_model.model_validate(base)


def load_chat_model(
    settings: ChatModelOptions, model: BaseChatModel | str | None, *, feature: str, owner: str
) -> BaseChatModel:
    """The chat model instance: ``model`` if it is one, else the one ``settings`` name.

    Args:
        settings: the effective options (see `merge_options`).
        model: the model given in code, if any.
        feature: what needs the model, for the missing-extra error ("the llm extractor").
        owner: the plugin class name, for the "required" error ("LLMExtractor").

    Raises:
        MissingDependencyError: a model string needs the ``langchain`` package.
        ConfigError: no model at all, or the named one cannot be made; the message starts with
            ``options.model`` or ``options.chat_model``.
    """
    if model is not None and not isinstance(model, str):
        return model
    if settings.model is not None:
        return init_chat_model_from_string(settings.model, settings.model_options, feature)
    if settings.chat_model is not None:
        return import_chat_model(settings.chat_model)
    raise ConfigError(
        "options.model: required: an init_chat_model string such as 'openai:gpt-4o-mini' "
        f"(or chat_model: 'package.module:attribute', or {owner}(model=chat_model))"
    )


def init_chat_model_from_string(model: str, options: dict[str, Any], feature: str) -> BaseChatModel:
    """Create a chat model with LangChain's ``init_chat_model``, as a `ConfigError` on failure.

    Nothing is sent over the network: providers construct their client lazily.

    Raises:
        MissingDependencyError: the ``langchain`` package (``memory-tiers[llm]``) is missing.
        ConfigError: the provider is unknown, its package is missing, or it rejected the options;
            the message starts with ``options.model``.
    """
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise MissingDependencyError(feature, "llm", "langchain") from None
    try:
        return init_chat_model(model, **options)
    except ImportError as exc:
        raise ConfigError(f"options.model: {model!r} needs its provider's package: {exc}") from exc
    except Exception as exc:  # providers raise anything from ValueError to their own errors
        raise ConfigError(f"options.model: cannot create {model!r}: {exc}") from exc


def import_chat_model(path: str) -> BaseChatModel:
    """The chat model named by ``options.chat_model``: an instance, or a class or function to call.

    Raises:
        ConfigError: the path does not import, or names something that is not a chat model;
            the message starts with ``options.chat_model``.
    """
    from langchain_core.language_models import BaseChatModel

    target = import_object(path, "options.chat_model")
    model = target
    if not isinstance(target, BaseChatModel) and callable(target):
        try:
            model = target()
        except Exception as exc:
            raise ConfigError(f"options.chat_model: calling {path!r} failed: {exc}") from exc
    if not isinstance(model, BaseChatModel):
        raise ConfigError(f"options.chat_model: {path!r} is not a LangChain chat model (nor makes one)")
    return model
