"""A FastAPI service that runs agents in the background and lets clients poll their state.

- ``POST /threads/{thread_id}/runs`` with ``{"message": "..."}`` starts a turn in the background
  and answers ``202 Accepted`` at once (``409`` while that thread already has a run going);
- ``GET /threads/{thread_id}`` answers the thread's status (``running``, ``idle``, ``failed``)
  and its state: the messages, and what memory knows about the user.

The caller is the ``X-User-Id`` header (in a real service, take it from your authentication).
Every read goes through ``manager.threads``, which checks ownership: another user's thread is a
``403``, an unknown one a ``404``.

Run it: ``python examples/fastapi_service.py`` drives the app offline through httpx's
``ASGITransport``; ``uvicorn fastapi_service:app`` (from examples/) serves it for real. Run
status lives in this process: with several server processes, keep it in shared storage (the
session tier, or a table) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from memory_tiers import InvalidIdentifierError, MemoryManager, MemoryState, NotFoundError, OwnershipError
from memory_tiers.cli.responder import Responder

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
POLL_LIMIT = 200  # polls before the demo client gives up: 10 s


class RunRequest(BaseModel):
    message: str


class Runs:
    """This process's background turns, one at a time per (user, thread)."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], asyncio.Task[Any]] = {}

    def status(self, user_id: str, thread_id: str) -> tuple[str, str | None]:
        task = self.tasks.get((user_id, thread_id))
        if task is None:
            return "idle", None
        if not task.done():
            return "running", None
        if task.cancelled():
            return "failed", "the run was cancelled (the service stopped)"
        error = task.exception()
        return ("idle", None) if error is None else ("failed", repr(error))

    def start(self, user_id: str, thread_id: str, turn: Coroutine[Any, Any, Any]) -> bool:
        if self.status(user_id, thread_id)[0] == "running":
            turn.close()
            return False
        task = asyncio.get_running_loop().create_task(turn, name=f"run-{thread_id}")
        task.add_done_callback(_log_failure)
        self.tasks[(user_id, thread_id)] = task
        return True

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def create_app(manager: MemoryManager | None = None) -> FastAPI:
    """The service, on ``manager`` (embedded defaults when None), opened for the app's lifetime."""
    memory = manager or MemoryManager()
    runs = Runs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with memory:
            builder = memory.nodes.around(Responder().respond, MemoryState)
            app.state.graph = builder.compile(checkpointer=memory.checkpointer)
            try:
                yield
            finally:
                await runs.stop()  # before the manager closes under them

    app = FastAPI(title="memory_tiers agents", lifespan=lifespan)
    errors = {OwnershipError: 403, NotFoundError: 404, InvalidIdentifierError: 400}
    for error, code in errors.items():
        app.add_exception_handler(error, _answer(code))

    @app.post("/threads/{thread_id}/runs", status_code=202)
    async def start_run(thread_id: str, body: RunRequest, x_user_id: str = Header()) -> dict[str, str]:
        # Another user's thread is a 403 now; a new thread is registered to this user by the run.
        with contextlib.suppress(NotFoundError):
            await memory.threads.get(x_user_id, thread_id)
        run = {"configurable": {"user_id": x_user_id, "thread_id": thread_id}}
        turn = app.state.graph.ainvoke({"messages": [("user", body.message)]}, run)
        if not runs.start(x_user_id, thread_id, turn):
            raise HTTPException(409, "this thread already has a run in progress")
        return {"thread_id": thread_id, "status": "running"}

    @app.get("/threads/{thread_id}")
    async def thread_state(thread_id: str, x_user_id: str = Header()) -> dict[str, Any]:
        status, error = runs.status(x_user_id, thread_id)
        if status == "running":
            return {"thread_id": thread_id, "status": status}
        values = await memory.threads.state(x_user_id, thread_id)  # owner-checked
        return {
            "thread_id": thread_id,
            "status": status,
            "error": error,
            "messages": [{"role": m.type, "content": m.content} for m in values.get("messages", [])],
            "profile": (await memory.long_term.get_profile(x_user_id)).document,  # learned so far
        }

    return app


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A background run's failure goes to the log: the client may never poll for it."""
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("background %s failed", task.get_name(), exc_info=error)


def _answer(code: int) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


app = create_app()
"""For ``uvicorn fastapi_service:app``: embedded memory under ./.memory_tiers/ (opened at startup)."""


async def poll(client: httpx.AsyncClient, thread_id: str, user: str) -> dict[str, Any]:
    """GET the thread until its run is over (bounded by POLL_LIMIT)."""
    for _ in range(POLL_LIMIT):
        reply = await client.get(f"/threads/{thread_id}", headers={"X-User-Id": user})
        body = reply.json()
        if body.get("status") != "running":
            return body
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"thread {thread_id} still running after {POLL_LIMIT * POLL_SECONDS:.0f} s")


async def main(data_dir: str) -> None:
    app = create_app(MemoryManager({"data_dir": data_dir}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            for text in ["Hi, I'm Alice. I live in Oslo.", "What do you know about me?"]:
                started = await client.post(
                    "/threads/t-1/runs", json={"message": text}, headers={"X-User-Id": "alice"}
                )
                print(f"POST /threads/t-1/runs -> {started.status_code} {started.json()}")
                state = await poll(client, "t-1", "alice")
                print(f"GET /threads/t-1 -> {state['status']}: {state['messages'][-1]['content']}")
            other = await client.get("/threads/t-1", headers={"X-User-Id": "mallory"})
            print(f"GET /threads/t-1 as mallory -> {other.status_code}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(directory))
