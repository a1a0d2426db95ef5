"""Versioned migrators: steps that bring a state (or a profile document) from version v to v + 1.

A `StateMigrator` holds the steps; `check` proves at startup that every version from the oldest
to the current one has its step, and `migrate` runs the chain, then validates the result against
an optional pydantic model. A failing step or validation raises and returns nothing, so the
caller writes nothing: the thread (or profile) stays exactly as it was.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from memory_tiers.errors import ConfigError, StateSchemaError
from memory_tiers.imports import import_object

Step = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


class StateMigrationError(StateSchemaError):
    """A migration step failed or its result did not validate; nothing was written.

    Attributes:
        subject: what was being migrated (``thread 't1'``, ``profile of 'alice'``).
        from_version: the version it had.
        to_version: the version it was being brought to.
    """

    def __init__(self, message: str, *, subject: str, from_version: int, to_version: int) -> None:
        super().__init__(message)
        self.subject = subject
        self.from_version = from_version
        self.to_version = to_version


class StateMigrator:
    """Steps from version v to v + 1, registered with `step` (sync or async functions).

    Args:
        model: an optional pydantic model the migrated state must validate against.
        initial_version: the version of a state that has no version recorded.

    Example:
        >>> import asyncio
        >>> migrator = StateMigrator()
        >>> @migrator.step(1)
        ... def rename_name(state):
        ...     state["full_name"] = state.pop("name", "")
        ...     return state
        >>> @migrator.step(2)
        ... async def add_greeting(state):
        ...     return {**state, "greeting": f"Hello {state['full_name']}"}
        >>> migrator.check(3)
        >>> asyncio.run(migrator.migrate({"name": "Ada"}, 1, 3))
        {'full_name': 'Ada', 'greeting': 'Hello Ada'}
    """

    def __init__(self, model: type[BaseModel] | None = None, *, initial_version: int = 1) -> None:
        self.model = model
        self.initial_version = initial_version
        self._steps: dict[int, Step] = {}

    @classmethod
    def from_steps(cls, steps: Mapping[int, Step], **kwargs: Any) -> StateMigrator:
        """A migrator from ``{from_version: step}``."""
        migrator = cls(**kwargs)
        for version, step in steps.items():
            migrator.register(version, step)
        return migrator

    def register(self, from_version: int, step: Step) -> None:
        """Add the step from ``from_version`` to ``from_version + 1``.

        Raises:
            ConfigError: that step is already registered, or the version is not a positive int.
        """
        if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
            raise ConfigError(f"state migrators: version {from_version!r} must be an integer >= 1")
        if from_version in self._steps:
            raise ConfigError(
                f"state migrators: two steps from version {from_version} to {from_version + 1} "
                f"({_name(self._steps[from_version])} and {_name(step)})"
            )
        if not callable(step):
            raise ConfigError(f"state migrators: the step from version {from_version} is not callable")
        self._steps[from_version] = step

    def step(self, from_version: int) -> Callable[[Step], Step]:
        """Decorator form of `register`."""

        def decorate(step: Step) -> Step:
            self.register(from_version, step)
            return step

        return decorate

    @property
    def versions(self) -> list[int]:
        """The versions that have a step to the next one, in order."""
        return sorted(self._steps)

    def check(self, current_version: int) -> None:
        """Prove every version from `initial_version` up to ``current_version`` can be migrated.

        Raises:
            ConfigError: naming each missing step, or a step beyond the current version.
        """
        if current_version < self.initial_version:
            raise ConfigError(
                f"state migrators: the current version {current_version} is below the initial "
                f"version {self.initial_version}"
            )
        missing = [v for v in range(self.initial_version, current_version) if v not in self._steps]
        if missing:
            steps = ", ".join(f"{v} -> {v + 1}" for v in missing)
            raise ConfigError(
                f"state migrators: no step for {steps}; states at version {missing[0]} could not "
                f"reach the current version {current_version}"
            )
        beyond = [v for v in self._steps if v >= current_version or v < self.initial_version]
        if beyond:
            raise ConfigError(
                f"state migrators: steps from versions {sorted(beyond)} fall outside "
                f"{self.initial_version}..{current_version} (is state.version too low?)"
            )

    async def migrate(
        self, state: dict[str, Any], from_version: int, to_version: int, *, subject: str = "state"
    ) -> dict[str, Any]:
        """Run the steps from ``from_version`` to ``to_version`` on a copy of ``state``.

        Raises:
            StateMigrationError: a step raised or returned something that is not a dict, or the
                result fails the model's validation; the message names ``subject``, the
                versions and the step or field.
        """
        current = dict(state)
        for version in range(from_version, to_version):
            step = self._steps.get(version)

            def fail(problem: str, v: int = version) -> StateMigrationError:
                return StateMigrationError(
                    f"{subject}: migrating from version {from_version} to {to_version} failed at "
                    f"step {v} -> {v + 1}: {problem}",
                    subject=subject,
                    from_version=from_version,
                    to_version=to_version,
                )

            if step is None:
                raise fail("no step is registered")
            try:
                result = step(current)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                raise fail(f"{_name(step)} raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(result, dict):
                raise fail(f"{_name(step)} returned {type(result).__name__}, not a dict")
            current = result
        self.validate(current, subject=subject, from_version=from_version, to_version=to_version)
        return current

    def validate(self, state: dict[str, Any], *, subject: str, from_version: int, to_version: int) -> None:
        """Check ``state`` against the model, if there is one."""
        if self.model is None:
            return
        try:
            self.model.model_validate(state)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise StateMigrationError(
                f"{subject}: the state migrated from version {from_version} to {to_version} does "
                f"not validate against {self.model.__name__}: {problems}",
                subject=subject,
                from_version=from_version,
                to_version=to_version,
            ) from None


def _name(step: Any) -> str:
    return getattr(step, "__qualname__", None) or repr(step)


def as_migrator(target: Any, key: str) -> StateMigrator:
    """A `StateMigrator` from a configured object: a migrator, or ``{from_version: step}``."""
    if isinstance(target, StateMigrator):
        return target
    if isinstance(target, Mapping):
        return StateMigrator.from_steps(target)
    raise ConfigError(
        f"{key}: expected a StateMigrator or a dict of {{from_version: step}}, got {type(target).__name__}"
    )


def load_migrator(
    *,
    migrators: str | None,
    model: str | None,
    version: int,
    initial_version: int = 1,
    key: str,
) -> StateMigrator:
    """The migrator a config section names, checked against its current ``version``.

    ``migrators`` and ``model`` are ``"package.module:attribute"`` paths (either may be None);
    ``key`` is the section's key path, used in errors (``"state"``, ``"long_term.profile"``).

    Raises:
        ConfigError: naming the key, when something cannot be imported or a step is missing.
    """
    target = import_object(migrators, f"{key}.migrators") if migrators else {}
    migrator = as_migrator(target, f"{key}.migrators")
    if model is not None:
        model_class = import_object(model, f"{key}.model")
        if not (isinstance(model_class, type) and issubclass(model_class, BaseModel)):
            raise ConfigError(f"{key}.model: {model!r} is not a pydantic model")
        migrator.model = model_class
    if migrators is None or initial_version != 1:
        migrator.initial_version = initial_version
    try:
        migrator.check(version)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}".replace(": state migrators:", ":")) from None
    return migrator
