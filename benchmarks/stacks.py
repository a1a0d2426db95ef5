"""The backend stacks a benchmark runs the memory layer on, as MemoryManager configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.servers import Servers

POSTGRES_REDIS = "postgres+redis"
EMBEDDED = "embedded"
IN_MEMORY = "in-memory"
REDIS_CHECKPOINTER = "redis-checkpointer"


@dataclass(frozen=True)
class Stack:
    """A named MemoryManager configuration."""

    name: str
    config: dict[str, Any]


def postgres_redis(servers: Servers, data_dir: Path) -> Stack:
    """PostgreSQL for the working and long-term tiers, Redis for sessions (the run's prefix)."""
    return Stack(
        POSTGRES_REDIS,
        {
            "data_dir": str(data_dir),
            "working": {"backend": "postgres", "url": servers.postgres_url},
            "session": {"url": servers.redis_url, "key_prefix": servers.key_prefix},
            "long_term": {"url": servers.postgres_url},
        },
    )


def embedded(data_dir: Path) -> Stack:
    """The defaults: SQLite files (working and long-term) and an in-process fakeredis."""
    return Stack(EMBEDDED, {"data_dir": str(data_dir)})


def in_memory(data_dir: Path) -> Stack:
    """LangGraph's InMemorySaver as the working tier, embedded long-term and session tiers."""
    return Stack(IN_MEMORY, {"data_dir": str(data_dir), "working": {"backend": "memory"}})


def redis_checkpointer(url: str, data_dir: Path) -> Stack:
    """LangGraph's AsyncRedisSaver on the Redis Stack at ``url`` as the working tier, embedded
    long-term and session tiers."""
    return Stack(REDIS_CHECKPOINTER, {"data_dir": str(data_dir), "working": {"backend": "redis", "url": url}})
