"""Shared pytest fixtures for tests that need real servers (see ``tests/services.py``).

Every fixture here is synchronous, so it works with any asyncio loop scope.
Embedded backends (SQLite, fakeredis) need no fixture beyond ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from services import (
    delete_prefixed_keys,
    postgres_admin_url,
    redis_admin_url,
    redis_client,
    redis_cluster,
    redis_stack_server,
    require_postgres,
    require_redis,
    temporary_database,
    unique_name,
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared Redis server (checked reachable; fail in CI, else skip)."""
    return require_redis(redis_admin_url())


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix ``mt-test-<hex>``; its keys are deleted (via SCAN) afterwards."""
    prefix = unique_name("mt-test-")
    yield prefix
    client = redis_client(redis_url)
    try:
        delete_prefixed_keys(client, prefix)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """Admin URL of the shared PostgreSQL server (checked reachable; fail in CI, else skip)."""
    return require_postgres(postgres_admin_url())


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a database ``mt_test_<hex>`` created for this test run, dropped at the end."""
    with temporary_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def fresh_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of an empty database created for this test only, dropped afterwards."""
    with temporary_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_stack_url() -> Iterator[str]:
    """URL of a private Redis Stack server (RediSearch + RedisJSON) started for this run."""
    with redis_stack_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of a node of a private 3-master Redis Cluster started for this run."""
    with redis_cluster() as url:
        yield url


MEMORY_BACKENDS = ("embedded", "postgres+redis")
PIPELINED_REDIS = "postgres+redis, session pipelines"


@pytest.fixture(params=MEMORY_BACKENDS)
def memory_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """A MemoryManager config for each backend family the suite runs on.

    ``embedded`` is the default (SQLite files + in-process fakeredis); ``postgres+redis`` uses
    the real servers, with this run's own database and a unique Redis key prefix.
    """
    return memory_config_for(request, tmp_path)


def memory_config_for(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The config of ``request.param``: one of MEMORY_BACKENDS, or PIPELINED_REDIS (the real
    servers with ``session.scripts`` off, as on a Cluster: for the session tier's tests, which
    run both ways a standalone Redis can be written)."""
    if request.param == "embedded":
        return {"data_dir": str(tmp_path / "data")}
    config = servers_config(request, tmp_path, request.getfixturevalue("postgres_url"))
    if request.param == PIPELINED_REDIS:
        config["session"] = {**config["session"], "scripts": False}  # type: ignore[dict-item]
    return config


def servers_config(request: pytest.FixtureRequest, tmp_path: Path, database: str) -> dict[str, object]:
    """Working and long-term tiers on the PostgreSQL ``database``, sessions on the shared Redis
    under the test's own key prefix."""
    return {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "postgres", "url": database},
        "session": {
            "url": request.getfixturevalue("redis_url"),
            "key_prefix": request.getfixturevalue("redis_prefix"),
        },
        "long_term": {"url": database},
    }


@pytest.fixture(params=["sqlite", "postgres"])
def empty_sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An async SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'long_term.db'}"
    from memory_tiers.long_term.engine import normalize_sql_url

    return normalize_sql_url(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def checkpointer_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """A MemoryManager config for each checkpointer backend: memory, SQLite, PostgreSQL (with
    long-term and sessions on the real servers too, in a database of the test's own, since
    retention and user deletion act on every thread they find) and Redis (a private Redis Stack)."""
    if request.param == "postgres":
        return servers_config(request, tmp_path, request.getfixturevalue("fresh_postgres_url"))
    working: dict[str, object] = {"backend": request.param}
    if request.param == "redis":
        working["url"] = request.getfixturevalue("redis_stack_url")
    return {"data_dir": str(tmp_path / "data"), "working": working}


@pytest.fixture(scope="module")
def migrated_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite long-term database at the head schema, shared by one test module."""
    from helpers import migrated

    return migrated(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('long_term') / 'long_term.db'}")


@pytest.fixture(scope="module")
def migrated_postgres_url(postgres_url: str) -> str:
    """This run's PostgreSQL database at the head schema (async URL)."""
    from helpers import migrated

    from memory_tiers.long_term.engine import normalize_sql_url

    return migrated(normalize_sql_url(postgres_url))


@pytest.fixture(params=["sqlite", "postgres"])
def migrated_sql_url(request: pytest.FixtureRequest) -> str:
    """A long-term database at the head schema: SQLite (per module) or this run's PostgreSQL."""
    return str(request.getfixturevalue(f"migrated_{request.param}_url"))
