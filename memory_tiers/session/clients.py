"""What kind of Redis client the session tier was given."""

from __future__ import annotations

import redis.asyncio as aioredis


def in_process(client: object) -> bool:
    """Whether ``client`` is fakeredis (or a subclass of it): its data, and so any lock on it, is
    this process's."""
    return any(kind.__module__.split(".")[0] == "fakeredis" for kind in type(client).__mro__)


def runs_scripts(client: object) -> bool:
    """Whether ``client`` is a standalone redis-py client the session scripts suit: not a Cluster
    (their keys are in several slots), not fakeredis (it runs Lua only with ``lupa`` installed,
    and slower than its pipelines)."""
    return isinstance(client, aioredis.Redis) and not in_process(client)
