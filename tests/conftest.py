"""Shared fixtures: real server processes and real MCP clients (the official SDK's)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

COMPONENTS = Path(__file__).parent / "components"
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """One compile cache for the checkout, in pytest's cache directory, never the user's `$HOME`.

    Building the componentize-py test component and compiling it to native code take ~40 s of
    CPU; paying that on every run (a fresh temporary cache) was a third of `make test`. Entries are
    named by content hash and engine settings and written atomically, so a kept cache can only
    hit for identical inputs, and the xdist workers can share it. The cold path (compile, cache,
    recover from a corrupt entry) has its own tests with their own directories. Without pytest's
    cache (`-p no:cacheprovider`) the run falls back to one temporary cache shared by its workers.
    Server processes the tests start inherit the directory through the environment.
    """
    if request.config.cache is not None:
        shared = request.config.cache.mkdir("statefulmcp-cache")
    else:
        root = tmp_path_factory.getbasetemp()
        shared = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "statefulmcp-cache"
    previous = os.environ.get("STATEFULMCP_CACHE_DIR")
    os.environ["STATEFULMCP_CACHE_DIR"] = str(shared)
    yield
    if previous is None:
        os.environ.pop("STATEFULMCP_CACHE_DIR", None)
    else:
        os.environ["STATEFULMCP_CACHE_DIR"] = previous


@dataclass
class ServerProcess:
    """A `statefulmcp serve` child process listening on a free port."""

    proc: subprocess.Popen[bytes]
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
    *args: str | Path, tmp: Path, env: dict[str, str] | None = None, wait: bool = True
) -> ServerProcess:
    """Start `statefulmcp serve ARGS --http 127.0.0.1:0` and wait until it says where it listens."""
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"server-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "statefulmcp.cli", "serve", *map(str, args), "--http", "127.0.0.1:0"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env={**os.environ, **(env or {})}
        )
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
def running(*args: str | Path, tmp: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = start_server(*args, tmp=tmp, env=env)
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def http_session(url: str, mode: str = "legacy", **kwargs: Any) -> AsyncIterator[ClientSession]:
    """An initialized `ClientSession` over streamable HTTP; `mode` is "legacy" or "modern"."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write, **kwargs) as session:
        if mode == "legacy":
            await session.initialize()
        else:
            await session.discover()
        yield session


@asynccontextmanager
async def stdio_session(*args: str | Path, cwd: Path | None = None) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "statefulmcp.cli", "serve", *map(str, args), "--stdio"],
        cwd=str(cwd) if cwd else None,
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


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
