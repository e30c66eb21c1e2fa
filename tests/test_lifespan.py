"""The server's life cycle: clear start-up failures, and shutdown that answers every call and ends."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import COMPONENTS, error, http_session, start_server, value

from statefulmcp.transport.lifespan import EXIT_FORCED

pytestmark = pytest.mark.anyio


def _wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_eager_activation_failure_stops_start_up_with_one_line_and_exit_2(tmp_path: Path) -> None:
    server = start_server(COMPONENTS / "life_eager_fails.py", tmp=tmp_path, wait=False)
    assert server.proc.wait(30) == 2
    log = server.log()
    assert "cannot start: on_activate of fragile/(singleton) failed: ConnectionError: device" in log
    assert "Traceback" not in log
    assert "tries again" not in log  # no call retries it: the server did not start


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "statefulmcp",
                "serve",
                str(COMPONENTS / "probe.py"),
                "--http",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2
    assert f"cannot start: 127.0.0.1:{port} is in use" in run.stderr
    assert "Traceback" not in run.stderr


async def test_calls_still_running_at_the_drain_timeout_get_a_shutting_down_error(tmp_path: Path) -> None:
    server = start_server(COMPONENTS / "life_slow.py", "--drain-timeout", "1", tmp=tmp_path)
    try:
        async with http_session(server.url) as session:
            results: dict[str, object] = {}

            async def call(name: str, args: dict[str, Any]) -> None:
                results[name] = await session.call_tool(name, args)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "slow_wait_forever", {"who": "a"})
                tg.start_soon(call, "slow_nap", {"who": "b", "seconds": 60})
                await _until_waiting(server.url)
                server.proc.send_signal(signal.SIGTERM)
            for name in ("slow_wait_forever", "slow_nap"):
                result = results[name]
                assert "shutting down" in error(result), name  # type: ignore[arg-type]
        assert server.proc.wait(60) in (0, EXIT_FORCED)
    finally:
        server.stop(sig=signal.SIGKILL)
    assert "ASGI callable returned without completing response" not in server.log()


async def _until_waiting(url: str) -> None:
    """Wait until the long-poll is parked and the nap runs (both visible in list_components)."""
    async with http_session(url) as probe:
        for _ in range(600):
            listed = value(await probe.call_tool("list_components", {}))
            details = listed["components"][0]["details"] if isinstance(listed, dict) else {}
            if details.get("waiters") == 1 and details.get("sync_threads", {}).get("busy") == 1:
                return
            await anyio.sleep(0.05)
    raise AssertionError("the calls never started")


def test_python_dash_m_statefulmcp_serves(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "statefulmcp", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "--drain-timeout" in run.stdout


def test_ready_reports_the_state_file_deleted_while_serving(tmp_path: Path) -> None:
    server = start_server(COMPONENTS / "probe.py", "--state", "s.db", tmp=tmp_path)
    try:
        _wait_for(lambda: httpx.get(f"{server.base}/ready").status_code == 200, "ready")
        (tmp_path / "s.db").unlink()
        _wait_for(lambda: httpx.get(f"{server.base}/ready").status_code == 503, "not ready")
        assert "deleted or replaced" in httpx.get(f"{server.base}/ready").json()["reason"]
    finally:
        server.stop()
