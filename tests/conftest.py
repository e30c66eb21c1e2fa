"""Shared fixtures: real server processes and real MCP clients (the official SDK's)."""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
import pytest
from forkserver import Child, ForkServer
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, LoggingMessageNotificationParams

from statefulmcp import StoreError
from statefulmcp.checker import replicas
from statefulmcp.remote import tls_context
from statefulmcp.state import Change, CommitChain

COMPONENTS = Path(__file__).parent / "components"
EXAMPLES = Path(__file__).parent.parent / "examples"


INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
"""A raw 2025-11-25 `initialize` request, for tests that must send what a client library would not."""

POST_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One compile cache per test run, in a temporary directory, never the user's `$HOME`.

    Shared by the xdist workers of a run (their temporary roots have one parent), and handed to
    every server process the tests start through the environment.
    """
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    previous = os.environ.get("STATEFULMCP_CACHE_DIR")
    os.environ["STATEFULMCP_CACHE_DIR"] = str(shared / "statefulmcp-cache")
    yield
    if previous is None:
        os.environ.pop("STATEFULMCP_CACHE_DIR", None)
    else:
        os.environ["STATEFULMCP_CACHE_DIR"] = previous


_forks: ForkServer | None = None
"""Starts the servers of this pytest worker (see `forkserver`); None: plain exec."""


@pytest.fixture(scope="session", autouse=True)
def _fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers and the checker's replicas start from this worker's fork server (see `forkserver`),
    unless `STATEFULMCP_TEST_EXEC=1` asks for plain exec."""
    global _forks
    if os.environ.get("STATEFULMCP_TEST_EXEC") == "1":
        yield
        return
    forks = ForkServer(tmp_path_factory.mktemp("forkserver"))
    _forks, replicas.launch = (
        forks,
        lambda args, directory, log: _launch(args, directory, log, dict(os.environ)),
    )
    try:
        yield
    finally:
        _forks, replicas.launch = None, replicas.exec_replica
        forks.close()


def _launch(args: list[str], cwd: Path, log: int, env: dict[str, str]) -> subprocess.Popen[bytes] | Child:
    """`statefulmcp ARGS` in `cwd`, stdout and stderr to the descriptor `log`: forked from this
    worker's fork server, or exec'd when there is none."""
    if _forks is not None:
        return _forks.launch(args, cwd=cwd, env=env, stdout=log, stderr=log)
    cmd = [sys.executable, "-m", "statefulmcp.cli", *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)


@dataclass
class ServerProcess:
    """A `statefulmcp serve` child process listening on a free port."""

    proc: subprocess.Popen[bytes] | Child
    url: str
    log_path: Path

    @property
    def base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_server(
    *args: str | Path,
    tmp: Path,
    env: dict[str, str] | None = None,
    wait: bool = True,
    bind: str = "127.0.0.1:0",
) -> ServerProcess:
    """Start `statefulmcp serve ARGS --http BIND` and wait until it says where it listens."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"server-{time.monotonic_ns()}.log"
    argv = ["serve", *map(str, args), "--http", bind]
    with log_path.open("wb") as log:
        proc = _launch(argv, tmp, log.fileno(), {**os.environ, **(env or {})})
    server = ServerProcess(proc, "", log_path)
    if not wait:
        return server
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"serving on (http://\S+)", server.log())
        if match:
            server.url = match.group(1)
            return server
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.log()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start in 30 s:\n{server.log()}")


@contextmanager
def running(
    *args: str | Path, tmp: Path, env: dict[str, str] | None = None, bind: str = "127.0.0.1:0"
) -> Iterator[ServerProcess]:
    server = start_server(*args, tmp=tmp, env=env, bind=bind)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def http_session(
    url: str, mode: str = "legacy", *, token: str | None = None, **kwargs: Any
) -> AsyncIterator[ClientSession]:
    """An initialized `ClientSession` over streamable HTTP; `mode` is "legacy" or "modern";
    `token` is sent as a bearer token."""
    async with AsyncExitStack() as stack:
        # The SDK's own defaults (30 s, 300 s to read a stream), with one TLS context for the whole
        # run: building a client's context loads the CA bundle, 25 ms of CPU per session.
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        client = await stack.enter_async_context(
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300), verify=tls_context())
        )
        read, write = await stack.enter_async_context(streamable_http_client(url, http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write, **kwargs))
        if mode == "legacy":
            await session.initialize()
        else:
            await session.discover()
        yield session


@asynccontextmanager
async def stdio_session(
    *args: str | Path, cwd: Path | None = None, **kwargs: Any
) -> AsyncIterator[ClientSession]:
    """An initialized `ClientSession` over stdio; `kwargs` go to `ClientSession` (callbacks)."""
    argv = ["serve", *map(str, args), "--stdio"]
    command = _forks.command(argv) if _forks is not None else [sys.executable, "-m", "statefulmcp.cli", *argv]
    params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(cwd) if cwd else None)
    async with stdio_client(params) as (read, write), ClientSession(read, write, **kwargs) as session:
        await session.initialize()
        yield session


_Server = TypeVar("_Server", bound=http.server.ThreadingHTTPServer)


@contextmanager
def local_http(server: _Server) -> Iterator[_Server]:
    """Serve `server` (bound to a loopback port) on a thread until the block ends."""
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Heard:
    """What a client heard: log messages and progress, in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        self.events.append((params.level, params.data))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(("progress", (progress, total, message)))


class Notified:
    """A client's message handler that notices one kind of notification (`list_changed`, say):
    pass it as `message_handler`, then `await notified.next()` waits for the next one."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self._event = anyio.Event()

    async def __call__(self, message: object) -> None:
        if isinstance(message, self.kind):
            self._event.set()

    async def next(self, seconds: float = 10) -> None:
        with anyio.fail_after(seconds):
            await self._event.wait()
        self._event = anyio.Event()


def value(result: CallToolResult) -> Any:
    """The structured value of a successful call (`{"result": x}` unwrapped)."""
    assert not result.is_error, f"tool call failed: {text(result)}"
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]
    return content


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def error(result: CallToolResult) -> str:
    assert result.is_error, f"expected an error, got {result}"
    return text(result)


class MemoryStore:
    """An in-memory `Store` for in-process tests, whose commits can be made to fail or to wait.

    `failing`: every commit fails. `fail_next`: the next commit to be decided fails. `held`: an
    unset event makes commits wait (counted in `waiting`) until it is set, then they are decided
    in the order they were made. Chains behave as `CommitChain` says.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        self.failing = False
        self.fail_next = False
        self.held: asyncio.Event | None = None
        self.waiting = 0

    async def load(self, component: str, key: str) -> dict[str, Any]:
        return dict(self.rows.get((component, key), {}))

    async def commit(self, changes: list[Change], *, chain: CommitChain | None = None) -> None:
        if self.held is not None:
            self.waiting += 1
            await self.held.wait()
        if chain is not None and chain.failed:
            raise StoreError("an earlier commit of this instance failed; nothing of this turn was written")
        if self.failing or self.fail_next:
            self.fail_next = False
            if chain is not None:
                chain.failed = True
            raise StoreError("disk full; nothing of this turn was written")
        for change in changes:
            row = self.rows.setdefault((change.component, change.key), {})
            for name, text in change.names.items():
                if isinstance(text, str):
                    row[name] = text
                else:
                    row.pop(name, None)

    async def keys(self, component: str) -> list[str]:
        return [k for c, k in self.rows if c == component]

    async def purge(self, component: str) -> None:
        self.rows = {ck: r for ck, r in self.rows.items() if ck[0] != component}

    async def delete_instance(self, component: str, key: str) -> None:
        self.rows.pop((component, key), None)

    def close(self) -> None:
        pass
