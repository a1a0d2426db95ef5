"""Configuration: pydantic models, YAML loading, ``${VAR}`` interpolation and env overrides.

Sources, highest priority first: environment variables ``MEMORY_TIERS__SECTION__KEY``, then the
YAML file or dict. Every validation error becomes a `ConfigError` that names the key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memory_tiers.config_values import Duration, SecretUrl, Url
from memory_tiers.errors import ConfigError

ENV_PREFIX = "MEMORY_TIERS__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSpec(_Section):
    """A pluggable part (extractor, summarizer): a built-in name or ``"package.module:Class"``
    plus its options."""

    use: str = Field(min_length=1, description="a built-in name, or 'package.module:Class'")
    options: dict[str, Any] = Field(
        default_factory=dict, description="passed to the class, validated by its options_model if it has one"
    )


class RetentionRule(_Section):
    """How long a thread's checkpoints and the thread itself are kept."""

    keep_last: int | None = Field(
        default=None, ge=1, le=1_000_000, description="checkpoints kept per thread and namespace; null: all"
    )
    max_idle: Duration | None = Field(
        default=None, description="a thread idle longer than this is archived or deleted; null: never"
    )
    on_idle: Literal["archive", "delete"] = Field(
        default="archive", description="archive: summarize into long-term memory first; delete: just drop"
    )


class RetentionConfig(RetentionRule):
    """Retention policies, applied by ``manager.retention.run()`` / ``memory-tiers retention run``."""

    batch_size: int = Field(default=100, ge=1, le=10_000, description="threads handled per batch")
    namespaces: dict[str, RetentionRule] = Field(
        default_factory=dict,
        description="per thread namespace overrides; keys not set in an override come from the defaults",
    )

    def rule_for(self, namespace: str | None) -> RetentionRule:
        """The effective rule for threads of ``namespace`` (None: the defaults).

        Example:
            >>> cfg = RetentionConfig(keep_last=50, namespaces={"support": {"max_idle": "7d"}})
            >>> rule = cfg.rule_for("support")
            >>> rule.keep_last, rule.max_idle.days
            (50, 7)
        """
        override = None if namespace is None else self.namespaces.get(namespace)
        base = {name: getattr(self, name) for name in RetentionRule.model_fields}
        if override is not None:
            base |= {name: getattr(override, name) for name in override.model_fields_set}
        return RetentionRule.model_validate(base)


class ArchiveConfig(_Section):
    """How ``manager.threads.archive`` (and retention's ``on_idle: archive``) summarizes a thread."""

    summarizer: str | PluginSpec = Field(
        default="extractive",
        description="extractive (offline), llm, or {use: 'package.module:Class', options: {...}}",
    )
    extract_facts: bool = Field(
        default=True, description="run the long-term extractors over the thread's messages first"
    )


_TYPE_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?", re.ASCII)


def _type_path(value: object) -> str:
    if not isinstance(value, str) or not _TYPE_PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not 'package.module:Class' or 'package.module'")
    return value


class SerdeConfig(_Section):
    """What a stored checkpoint may turn back into (see "Safe deserialization" in
    ``docs/reliability.md``). LangChain messages and documents, LangGraph's own types, datetimes
    and memory_tiers' models are always allowed; pickle never is."""

    allowed_modules: list[Annotated[str, BeforeValidator(_type_path)]] = Field(
        default_factory=list,
        description="your own types the graph state holds, as 'package.module:Class' or "
        "'package.module' (every class defined there); any other type loads as its plain data",
    )


class ThreadLockConfig(_Section):
    """``manager.threads.lock``: one run at a time per thread, across workers (see
    ``docs/locking.md``)."""

    timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="how long lock() waits for another run of the thread before it raises "
        "ThreadLockTimeoutError (a call may pass its own timeout)",
    )
    lease: Duration = Field(
        default=timedelta(seconds=60),
        description="how long the lock outlives a worker that died holding it; a live holder "
        "renews it every lease/3",
    )


class WorkingConfig(_Section):
    """Working memory: the LangGraph checkpointer that persists each thread's graph state."""

    serde: SerdeConfig = SerdeConfig()

    backend: Literal["memory", "sqlite", "postgres", "redis"] = Field(
        default="sqlite",
        description="the LangGraph checkpointer: memory (tests), sqlite, postgres (extra postgres), "
        "redis (extra redis-checkpoint)",
    )
    url: Url | None = Field(
        default=None,
        description="sqlite: a file path (default <data_dir>/working.db); postgres: "
        "postgresql://...; redis: redis://... of a Redis 8 or Redis Stack server",
    )
    pool_min_size: int = Field(default=1, ge=0, le=1000, description="postgres: connections kept open")
    pool_max_size: int = Field(default=10, ge=1, le=1000, description="postgres: most connections open")
    connect_timeout: Duration = Field(
        default=timedelta(seconds=5), description="how long opening may wait for the server"
    )
    busy_timeout: Duration = Field(
        default=timedelta(seconds=5), description="sqlite: how long a writer waits for a lock"
    )
    retention: RetentionConfig = RetentionConfig()
    archive: ArchiveConfig = ArchiveConfig()
    fencing: bool = Field(
        default=True,
        description="every checkpoint write of a run compare-and-sets the thread's head, so a run "
        "that another run of the same thread overtook fails with ThreadConflictError instead of "
        "forking the history (heads live in the session tier's Redis; per process on fakeredis)",
    )
    lock: ThreadLockConfig = ThreadLockConfig()

    @model_validator(mode="after")
    def _url_required_for_servers(self) -> WorkingConfig:
        if self.backend in ("postgres", "redis") and self.url is None:
            raise ValueError(f"backend {self.backend!r} needs a url")
        return self


class SessionConfig(_Section):
    """Short-term memory: session context in Redis with a sliding TTL."""

    url: Url = Field(
        default=SecretUrl("memory://"),
        description="redis://, rediss:// or unix:// URL; memory:// for in-process fakeredis",
    )
    cluster: bool = Field(
        default=False,
        description="url names a node of a Redis Cluster (redis:// or rediss://): connect with "
        "RedisCluster, which discovers the other nodes",
    )
    ttl: Duration = Field(
        default=timedelta(hours=1), description="a session expires this long after its last write (or read)"
    )
    sliding: bool = Field(default=True, description="reads push the expiry forward by ttl")
    scripts: bool = Field(
        default=True,
        description="on a standalone Redis, each session read and write is one Lua script (EVALSHA) "
        "of the same plain commands instead of a pipeline of them; off behind a sharding proxy, a "
        "proxy that refuses EVAL or an ACL user without @scripting. Cluster and memory:// always "
        "use pipelines",
    )
    key_prefix: str = Field(
        default="memory_tiers",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        description="prefix of every key",
    )
    connect_timeout: Duration = Field(default=timedelta(seconds=5), description="bound on connecting")
    socket_timeout: Duration = Field(default=timedelta(seconds=5), description="bound on each command")
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="times a command is retried after a connection error or timeout, with "
        "exponential backoff (redis-py's Retry); every session command is idempotent",
    )
    on_unavailable: Literal["degrade", "fail"] = Field(
        default="degrade",
        description="Redis unreachable in a node: degrade (empty session, no write, "
        "state['memory_degraded'] lists 'session') or fail (the turn raises BackendUnavailableError)",
    )
    archive_on_expiry: bool = Field(
        default=True, description="an expired session is summarized into long-term memory"
    )
    expiry_grace: Duration = Field(
        default=timedelta(days=1),
        description="how long an expired session's copy waits for the sweeper before Redis drops it",
    )
    sweep_interval: Duration | None = Field(
        default=timedelta(minutes=1), description="how often expired sessions are archived; null: never"
    )


class RecallWeights(_Section):
    """How the load node ranks facts: a weighted sum of three scores, each in [0, 1]."""

    relevance: float = Field(default=1.0, ge=0.0, description="full-text match with this turn's message")
    recency: float = Field(default=0.3, ge=0.0, description="how recently the fact was last observed")
    confidence: float = Field(default=0.3, ge=0.0, description="the fact's consolidated confidence")


class SemanticRecallConfig(_Section):
    """Optional semantic recall through a LangChain ``Embeddings``."""

    embeddings: str | None = Field(
        default=None,
        description="'package.module:attribute' naming an Embeddings instance or a factory of one "
        "(or pass embeddings= to MemoryManager)",
    )
    weight: float = Field(default=1.0, ge=0.0, description="weight of cosine similarity in the rank")
    candidates: int = Field(
        default=200, ge=1, le=5000, description="facts fetched in the one query, then re-ranked"
    )


class RecallConfig(_Section):
    """Which long-term facts the load node brings into the state."""

    k: int = Field(default=8, ge=0, le=200, description="facts recalled per turn, besides pinned ones")
    weights: RecallWeights = RecallWeights()
    recency_half_life: Duration = Field(
        default=timedelta(days=30), description="age at which the recency score halves"
    )
    pinned_limit: int = Field(default=20, ge=0, le=200, description="pinned facts always recalled")
    semantic: SemanticRecallConfig = SemanticRecallConfig()


class ExtractionConfig(_Section):
    """When extractors run, and what a failing one does to the turn."""

    mode: Literal["inline", "deferred"] = Field(
        default="inline",
        description="inline: facts are stored before the save node returns; deferred: after the "
        "turn, debounced per thread and flushed when the manager closes",
    )
    debounce: Duration = Field(
        default=timedelta(seconds=2), description="deferred: wait this long for a newer turn"
    )
    on_error: Literal["report", "raise"] = Field(
        default="report",
        description="report: log it and list it in state['memory_errors']; raise: fail the turn",
    )


class ProfileConfig(_Section):
    """How facts patch the user's profile document, and its schema version."""

    version: int = Field(default=1, ge=1, description="the profile document schema version this code writes")
    migrators: str | None = Field(
        default=None,
        description="'package.module:attribute' naming a StateMigrator or a dict {from_version: step} "
        "for profile documents",
    )
    model: str | None = Field(
        default=None, description="'package.module:Model': a pydantic model migrated profiles must pass"
    )

    mappings: dict[str, str] | None = Field(
        default=None,
        description="fact attribute -> profile key, for facts about the user; None maps every "
        "single-valued attribute to itself, {} turns patching off",
    )


class GuardConfig(_Section):
    """Memory hygiene: what happens to instruction-shaped fact values at write time."""

    mode: Literal["off", "flag", "reject"] = Field(
        default="flag",
        description="flag: store it but never recall it into prompts; reject: do not store it",
    )


class StoreConfig(_Section):
    """The LangGraph BaseStore over the long-term database (``manager.store``)."""

    default_ttl: Duration | None = Field(default=None, description="TTL of items put without one")
    refresh_on_read: bool = Field(default=True, description="get and search push expiry forward")
    sweep_interval: Duration | None = Field(
        default=timedelta(minutes=5), description="how often expired items are deleted; null: never"
    )


class LongTermConfig(_Section):
    """Long-term memory: profiles, facts, the thread registry and archives in SQL."""

    url: Url | None = Field(
        default=None,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path (default "
        "<data_dir>/long_term.db) or postgresql+asyncpg://...",
    )
    recall: RecallConfig = RecallConfig()
    extractors: list[str | PluginSpec] = Field(
        default_factory=lambda: ["rules"],
        description="run in order on each turn's new messages: rules, llm, or {use: 'package.module:Class', "
        "options: {...}}",
    )
    extraction: ExtractionConfig = ExtractionConfig()
    profile: ProfileConfig = ProfileConfig()
    guard: GuardConfig = GuardConfig()
    store: StoreConfig = StoreConfig()
    pool_size: int = Field(default=5, ge=1, le=1000, description="SQLAlchemy pool: connections kept open")
    max_overflow: int = Field(
        default=10, ge=0, le=1000, description="SQLAlchemy pool: connections opened beyond pool_size"
    )
    pool_timeout: Duration = Field(
        default=timedelta(seconds=10), description="how long a query waits for a free connection"
    )
    connect_timeout: Duration = Field(default=timedelta(seconds=5), description="bound on connecting")
    statement_timeout: Duration | None = Field(
        default=timedelta(seconds=30),
        description="postgres: bound on each statement, client side (asyncpg command_timeout), so a "
        "hung server cannot hang a turn; schema upgrades run under it too; null: no bound",
    )
    generic_plans: bool = Field(
        default=True,
        description="postgres: the library's connections plan each prepared statement once "
        "(SET plan_cache_mode = force_generic_plan on connecting) instead of letting PostgreSQL "
        "re-plan it on every call; false: PostgreSQL's own choice (plan_cache_mode = auto)",
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="times the load's read and the save's transaction are retried after a lost "
        "connection or a timeout, with exponential backoff (both are idempotent)",
    )
    on_unavailable: Literal["degrade", "fail"] = Field(
        default="degrade",
        description="database unreachable at recall: degrade (no profile or facts, "
        "state['memory_degraded'] lists 'long_term') or fail; a save always fails with "
        "BackendUnavailableError, it never drops facts",
    )

    def extractor_specs(self) -> list[PluginSpec]:
        """The extractors as specs, bare names expanded."""
        return [e if isinstance(e, PluginSpec) else PluginSpec(use=e) for e in self.extractors]


class IdKeysConfig(_Section):
    """Where the nodes find the ids in ``config['configurable']`` or the runtime context."""

    thread: str = Field(default="thread_id", description="the key holding the thread id")
    user: str = Field(default="user_id", description="the key holding the user id")
    session: str = Field(
        default="session_id", description="the key holding the session id; absent: the thread id is used"
    )


class StateConfig(_Section):
    """The version of the graph state this code writes (``memory_version``), and how older
    threads are brought to it."""

    version: int = Field(
        default=1, ge=1, description="the state version this code writes; older threads are migrated to it"
    )
    migrators: str | None = Field(
        default=None,
        description="'package.module:attribute' naming a StateMigrator or a dict {from_version: step}",
    )
    model: str | None = Field(
        default=None, description="'package.module:Model': a pydantic model migrated states must pass"
    )
    initial_version: int = Field(default=1, ge=1, description="the version of a state that records none")


class ObservabilityConfig(_Section):
    """What the OpenTelemetry spans record (see ``docs/observability.md``)."""

    include_user_id: bool = Field(
        default=False,
        description="put the user id on spans as memory_tiers.user_id; off by default because user "
        "ids may be personal data that outlives users.forget in a tracing backend",
    )


class MemoryTiersConfig(BaseSettings):
    """The whole configuration. Environment variables override the file or dict.

    Example:
        >>> cfg = MemoryTiersConfig.model_validate({"session": {"ttl": "15m"}})
        >>> cfg.session.ttl.total_seconds()
        900.0
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(default=Path(".memory_tiers"), description="embedded backends' files")
    setup: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: opening the manager upgrades schemas; manual: it refuses to open "
        "an outdated schema (run `memory-tiers db upgrade`)",
    )
    working: WorkingConfig = WorkingConfig()
    session: SessionConfig = SessionConfig()
    long_term: LongTermConfig = LongTermConfig()
    ids: IdKeysConfig = IdKeysConfig()
    state: StateConfig = StateConfig()
    observability: ObservabilityConfig = ObservabilityConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, passwords masked."""
        return self.model_dump(mode="json")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(data: Any, environ: Mapping[str, str] | None = None, path: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a loaded YAML tree.

    Example:
        >>> interpolate({"url": "redis://${HOST:-localhost}:6379"}, environ={})
        {'url': 'redis://localhost:6379'}
    """
    env = os.environ if environ is None else environ
    if isinstance(data, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{path or '<root>'}: environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    return _VAR.sub(replace, data)


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<root>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "literal_error":
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {where}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(source: MemoryTiersConfig | Mapping[str, Any] | None = None) -> MemoryTiersConfig:
    """Build a validated config from a model, a dict (interpolated) or nothing (defaults)."""
    if isinstance(source, MemoryTiersConfig):
        return source
    data = interpolate(dict(source or {}))
    try:
        return MemoryTiersConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    except ValueError as exc:  # pydantic-settings raises this for malformed env values
        raise ConfigError(f"invalid configuration from the environment: {exc}") from None


def load_yaml(path: str | os.PathLike[str]) -> MemoryTiersConfig:
    """Read a YAML file (``safe_load`` only) and build a validated config from it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections, got {type(data).__name__}")
    return load_config(data)
