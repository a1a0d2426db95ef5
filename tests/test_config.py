"""Configuration: YAML, interpolation, env overrides, and errors that say what to fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from memory_tiers import ConfigError, MemoryManager, MissingDependencyError
from memory_tiers.config import MemoryTiersConfig, load_config, load_yaml


def write(tmp_path, text):
    path = tmp_path / "memory_tiers.yaml"
    path.write_text(text)
    return path


def test_yaml_with_variables_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "s3cret")
    path = write(
        tmp_path,
        """
working: {backend: postgres, url: "postgresql://app:${DB_PASSWORD}@db/agents"}
session: {url: "redis://${REDIS_HOST:-localhost}:6379/0", ttl: 15m, sliding: false}
long_term: {recall: {k: 3}, extractors: [rules, {use: rules, options: {confidence: 0.6}}]}
""",
    )
    config = load_yaml(path)
    assert config.working.url.get_secret_value() == "postgresql://app:s3cret@db/agents"
    assert config.session.url.get_secret_value() == "redis://localhost:6379/0"
    assert config.session.ttl == timedelta(minutes=15) and config.session.sliding is False
    assert config.long_term.recall.k == 3
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.masked())
    assert config.masked()["working"]["url"] == "postgresql://app:***@db/agents"


def test_a_missing_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"working.url: environment variable NOPE_URL is not set"):
        load_yaml(write(tmp_path, "working: {backend: postgres, url: '${NOPE_URL}'}"))


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORY_TIERS__SESSION__TTL", "90s")
    monkeypatch.setenv("MEMORY_TIERS__LONG_TERM__RECALL__K", "2")
    config = load_yaml(write(tmp_path, "session: {ttl: 1h}"))
    assert config.session.ttl == timedelta(seconds=90)
    assert config.long_term.recall.k == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("session: {ttl: soon}", "session.ttl"),
        ("session: {tll: 1h}", "session.tll: unknown key"),
        ("working: {backend: mongo}", "working.backend"),
        ("working: {backend: redis}", "needs a url"),
        ("long_term: {recall: {k: -1}}", "long_term.recall.k"),
        ("session: [1, 2", "not valid YAML"),
        ("- a\n- b", "top level must be a mapping"),
        ("session: {key_prefix: 'a b'}", "session.key_prefix"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_yaml(write(tmp_path, text))


def test_unknown_or_broken_extractors_are_config_errors():
    with pytest.raises(ConfigError, match="unknown extractor 'magic'"):
        MemoryManager({"long_term": {"extractors": ["magic"]}})
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        MemoryManager({"long_term": {"extractors": ["no_such_module:X"]}})
    with pytest.raises(ConfigError, match=r"extractors\[0\].options: confidence"):
        MemoryManager({"long_term": {"extractors": [{"use": "rules", "options": {"confidence": 7}}]}})


def test_a_custom_extractor_is_loaded_by_import_path(tmp_path, monkeypatch):
    module = tmp_path / "my_extractors.py"
    module.write_text(
        "from memory_tiers import FactCandidate\n"
        "class Shouty:\n"
        "    def extract(self, messages, context):\n"
        "        return [FactCandidate(attribute='mood', value='loud')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = MemoryManager({"long_term": {"extractors": ["my_extractors:Shouty"]}})
    assert type(manager.extractors[0]).__name__ == "Shouty"


async def test_an_unreachable_server_fails_fast_naming_tier_and_masked_url(tmp_path):
    from memory_tiers import BackendUnavailableError

    config = {
        "data_dir": str(tmp_path),
        "session": {"url": "redis://:s3cret@127.0.0.1:1/0", "connect_timeout": "1s"},
    }
    with pytest.raises(BackendUnavailableError) as caught:
        async with MemoryManager(config):
            pass
    assert "session tier" in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value) and "s3cret" not in str(caught.value)


async def test_manual_setup_refuses_an_outdated_schema_until_upgraded(tmp_path):
    config = {"data_dir": str(tmp_path), "setup": "manual"}
    with pytest.raises(ConfigError, match="memory-tiers db upgrade"):
        async with MemoryManager(config):
            pass
    async with MemoryManager({"data_dir": str(tmp_path)}):
        pass  # auto setup upgrades
    async with MemoryManager(config) as manager:
        assert (await manager.long_term.get_profile("alice")).version == 0


def test_a_missing_extra_names_the_install_command(monkeypatch):
    import builtins

    from memory_tiers.working.checkpointer import _import_backend

    real_import = builtins.__import__

    def no_postgres(name, *args, **kwargs):
        if name.startswith("langgraph.checkpoint.postgres"):
            raise ImportError(name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_postgres)
    monkeypatch.delitem(__import__("sys").modules, "langgraph.checkpoint.postgres.aio", raising=False)
    with pytest.raises(MissingDependencyError, match=r"memory-tiers\[postgres\]"):
        _import_backend("postgres")


def test_defaults_are_the_embedded_backends():
    config = load_config()
    assert config.working.backend == "sqlite"
    assert config.session.url.get_secret_value() == "memory://"
    assert config.long_term.url is None and str(config.data_dir) == ".memory_tiers"


def _keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_config_key_is_in_the_reference():
    reference = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    sections = {name: field.annotation for name, field in MemoryTiersConfig.model_fields.items()}
    missing = []
    for section, model in sections.items():
        keys = _keys(model) if hasattr(model, "model_fields") else [section]
        for key in keys:
            leaf = key.rsplit(".", 1)[-1]
            # A key is documented as `key`, or as `.leaf` in a row grouping siblings.
            if f"`{key}`" not in reference and f"`.{leaf}`" not in reference and f"`{leaf}`" not in reference:
                missing.append(f"{section}.{key}" if key != section else key)
    assert missing == []
