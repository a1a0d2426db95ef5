"""Shared CLI plumbing: the config options and how they become a `MemoryTiersConfig`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from memory_tiers.config import MemoryTiersConfig, load_config, load_yaml

F = TypeVar("F", bound=Callable[..., Any])


def config_options(func: F) -> F:
    """Add ``--config FILE`` and ``--data-dir DIR`` to a command."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the embedded backends keep their files (overrides data_dir).",
    )(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A memory_tiers YAML file (default: the embedded defaults).",
    )(func)
    return func


def build_config(config_file: Path | None, data_dir: Path | None) -> MemoryTiersConfig:
    """The config from ``config_file`` (or the defaults), with ``data_dir`` overridden if given.

    Raises:
        ConfigError: the file is unreadable, not YAML or not a valid configuration.
    """
    cfg = load_yaml(config_file) if config_file is not None else load_config(None)
    if data_dir is not None:
        cfg = cfg.model_copy(update={"data_dir": data_dir})
    return cfg
