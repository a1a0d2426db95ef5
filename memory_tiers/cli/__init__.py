"""The ``memory-tiers`` command: a runnable demo, config checks, schema and state migrations,
threads, sessions, retention, users' data rights and a health check (``doctor``).

Every `MemoryTiersError` reaching the top is printed to stderr (no traceback) with exit code 2.
"""

from __future__ import annotations

from typing import Any

import click

from memory_tiers.cli.config_cmd import config_group
from memory_tiers.cli.db import db_group
from memory_tiers.cli.demo import demo
from memory_tiers.cli.doctor import doctor
from memory_tiers.cli.retention_cmd import retention_group
from memory_tiers.cli.sessions_cmd import sessions_group
from memory_tiers.cli.state_cmd import state_group
from memory_tiers.cli.threads_cmd import threads_group
from memory_tiers.cli.users_cmd import users_group
from memory_tiers.errors import MemoryTiersError

ERROR_EXIT_CODE = 2


class _Group(click.Group):
    """A group that turns library errors into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemoryTiersError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(ERROR_EXIT_CODE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memory-tiers", prog_name="memory-tiers")
def main() -> None:
    """Three tiers of memory (working, session, long-term) for LangGraph agents."""


main.add_command(demo)
main.add_command(config_group)
main.add_command(db_group)
main.add_command(state_group)
main.add_command(threads_group)
main.add_command(sessions_group)
main.add_command(retention_group)
main.add_command(users_group)
main.add_command(doctor)

__all__ = ["main"]
