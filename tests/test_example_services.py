"""The service examples beyond "it runs": the FastAPI app's HTTP contract, and the multi-worker
deployment on the real PostgreSQL and Redis (tests/test_examples.py runs both offline too)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fastapi.testclient import TestClient
from services import temporary_database

from memory_tiers import MemoryManager

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def poll(client: TestClient, thread: str, user: str) -> dict[str, Any]:
    for _ in range(400):  # bounded: 20 s
        body = client.get(f"/threads/{thread}", headers={"X-User-Id": user}).json()
        if body.get("status") != "running":
            return body
        time.sleep(0.05)
    raise AssertionError(f"{thread} still running")


def test_fastapi_service_runs_in_the_background_and_polls(tmp_path):
    service = example("fastapi_service")
    app = service.create_app(MemoryManager({"data_dir": str(tmp_path)}))
    with TestClient(app) as client:
        alice = {"X-User-Id": "alice"}
        started = client.post("/threads/t1/runs", json={"message": "Hi, I'm Alice."}, headers=alice)
        assert started.status_code == 202
        assert started.json() == {"thread_id": "t1", "status": "running"}
        state = poll(client, "t1", "alice")
        assert state["status"] == "idle"
        assert [m["role"] for m in state["messages"]] == ["human", "ai"]
        assert state["profile"] == {"name": "Alice"}

        mallory = {"X-User-Id": "mallory"}
        assert client.get("/threads/t1", headers=mallory).status_code == 403
        assert client.post("/threads/t1/runs", json={"message": "hi"}, headers=mallory).status_code == 403
        assert client.get("/threads/nope", headers=alice).status_code == 404
        assert client.get("/threads/t1", headers={"X-User-Id": "not a valid id!"}).status_code == 400
        assert client.get("/threads/t1").status_code == 422  # no caller: no answer
        assert len(poll(client, "t1", "alice")["messages"]) == 2  # mallory's run never started


def test_fastapi_service_logs_a_failed_background_run(tmp_path, caplog):
    service = example("fastapi_service")
    app = service.create_app(MemoryManager({"data_dir": str(tmp_path)}))

    class Broken:
        async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the model provider is down")

    with TestClient(app) as client:
        app.state.graph = Broken()
        alice = {"X-User-Id": "alice"}
        assert client.post("/threads/t1/runs", json={"message": "hi"}, headers=alice).status_code == 202
        for _ in range(400):  # bounded: 20 s
            body = client.get("/threads/t1", headers=alice)
            if body.status_code != 200 or body.json()["status"] != "running":
                break
            time.sleep(0.05)
    # The client may never poll: the server's log must say the run failed, and why.
    (record,) = [r for r in caplog.records if r.exc_info and "provider is down" in str(r.exc_info[1])]
    assert record.levelname == "ERROR" and "t1" in record.getMessage()


def test_multi_worker_on_postgres_and_redis(postgres_server_url, redis_url, redis_prefix):
    module = example("multi_worker")
    with temporary_database(postgres_server_url) as database:
        env = {
            **os.environ,
            "MEMORY_TIERS_EXAMPLE_POSTGRES_URL": database,
            "MEMORY_TIERS_EXAMPLE_REDIS_URL": redis_url,
            "MEMORY_TIERS__SESSION__KEY_PREFIX": redis_prefix,  # env overrides reach every worker
        }
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "multi_worker.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "on PostgreSQL + Redis" in output
        assert "every turn recorded, facts learned, no errors" in output
        assert "ERROR" not in output
        config = {
            "setup": "manual",
            "working": {"backend": "postgres", "url": database},
            "session": {"url": redis_url, "key_prefix": redis_prefix},
            "long_term": {"url": database},
        }
        asyncio.run(_check_backends(config, module))


class FailingExtractor:
    """Imported by the example's worker processes (they get the parent's sys.path)."""

    def extract(self, messages: Any, context: Any) -> list[Any]:
        raise RuntimeError("extractor down")


def test_multi_worker_reports_failed_turns_without_waiting_for_answers_that_never_come(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import multi_worker

    # A thread whose turn failed gets no next turn: the dispatcher must not wait for one (it
    # would wait WAIT_SECONDS, then report a bogus "no answer from the workers").
    monkeypatch.setattr(multi_worker, "WAIT_SECONDS", 30.0)
    config = {
        "data_dir": str(tmp_path),
        "long_term": {
            "extractors": [{"use": f"{__name__}:FailingExtractor"}],
            "extraction": {"on_error": "raise"},
        },
    }
    asyncio.run(multi_worker.upgrade(config))
    last, _, errors = multi_worker.dispatch(config)
    assert last == {}
    assert sorted(error.split(":")[0] for error in errors) == sorted(t for _, t, _ in multi_worker.threads())
    assert all("extractor down" in error for error in errors)


async def _check_backends(config: dict[str, Any], module: ModuleType) -> None:
    """Read back what the workers wrote, independently of the example's own check."""
    async with MemoryManager(config) as manager:
        for user, thread, topic in module.threads():
            assert (await manager.threads.get(user, thread)).user_id == user
            messages = (await manager.threads.state(user, thread))["messages"]
            assert [m.content for m in messages if m.type == "human"] == module.turns(user, topic)
            assert topic in messages[-1].content  # the last turn recalled what it was told
        for user, name in module.USERS.items():
            assert (await manager.long_term.get_profile(user)).document.get("name") == name
            assert await manager.sessions.list(user), f"{user} has sessions in Redis"
