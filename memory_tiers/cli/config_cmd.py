"""``memory-tiers config check FILE``: validate a YAML file and show the effective config."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from memory_tiers.config import load_yaml


@click.group("config")
def config_group() -> None:
    """Inspect configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate FILE and print the effective configuration (passwords masked).

    Environment overrides (MEMORY_TIERS__SECTION__KEY) and ${VAR} expansion are applied, so
    the output is what a MemoryManager would run with. Exits 2 if the file is invalid.
    """
    cfg = load_yaml(file)
    click.echo(f"# {file}: valid; effective configuration (passwords masked)")
    click.echo(yaml.safe_dump(cfg.masked(), sort_keys=False, allow_unicode=True), nl=False)
