"""Smoke tests proving the real-server fixtures in ``conftest.py`` work."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from services import delete_prefixed_keys, free_port, redis_client, unique_name


def test_free_port_is_bindable() -> None:
    """free_port() returns a usable, non-privileged port."""
    port = free_port()
    assert 1024 <= port <= 65535


@pytest.mark.redis
def test_redis_url_answers_ping(redis_url: str) -> None:
    """The shared Redis answers PING."""
    client = redis_client(redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.redis
def test_redis_prefix_is_unique(redis_prefix: str) -> None:
    """redis_prefix has the documented shape."""
    assert redis_prefix.startswith("mt-test-")
    assert len(redis_prefix) > len("mt-test-")


@pytest.mark.redis
def test_delete_prefixed_keys_only_deletes_prefixed(redis_url: str) -> None:
    """delete_prefixed_keys removes ``<prefix>:*`` and ``<prefix>*`` keys and nothing else."""
    prefix = unique_name("mt-test-")
    other = unique_name("mt-test-other-")
    prefixed = [f"{prefix}:a", f"{prefix}:b:c", f"{prefix}-suffix", prefix]
    client = redis_client(redis_url)
    try:
        for key in prefixed:
            client.set(key, "1")
        client.set(other, "1")

        deleted = delete_prefixed_keys(client, prefix)

        assert deleted == len(prefixed)
        assert client.exists(*prefixed) == 0
        assert client.exists(other) == 1
    finally:
        client.delete(other, *prefixed)
        client.close()


def test_delete_prefixed_keys_rejects_empty_prefix() -> None:
    """An empty prefix would match every key, so it is refused."""
    with pytest.raises(ValueError):
        delete_prefixed_keys(None, "")  # type: ignore[arg-type]


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    """postgres_url points at the mt_test_<hex> database created for this run."""
    import psycopg

    dbname = urlsplit(postgres_url).path.lstrip("/")
    assert dbname.startswith("mt_test_")
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0] == dbname


@pytest.mark.postgres
def test_fresh_postgres_url_is_empty(fresh_postgres_url: str, postgres_url: str) -> None:
    """fresh_postgres_url is a different database with no user tables."""
    import psycopg

    assert fresh_postgres_url != postgres_url
    with psycopg.connect(fresh_postgres_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert row == (0,)


@pytest.mark.redis_stack
def test_redis_stack_has_search_and_json(redis_stack_url: str) -> None:
    """The private Redis Stack server loads RediSearch and RedisJSON."""
    client = redis_client(redis_stack_url)
    try:
        names = {module[b"name"].decode() for module in client.module_list()}
    finally:
        client.close()
    assert {"search", "ReJSON"} <= names
