"""Server processes for the benchmarks: start, wait until listening, and always stop.

Every child is registered the moment it is spawned and killed at interpreter exit, and the
kernel kills it too if this process dies first (`PR_SET_PDEATHSIG`), so a failed or interrupted
run leaves no stray servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
_LIVE: set[subprocess.Popen[bytes]] = set()
_URL = re.compile(r"serving on (http://\S+)")


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGKILL it when the parent dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@atexit.register
def kill_all() -> None:
    """Kill every child still running; the last line of defence against stray servers."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(5)
        _LIVE.discard(proc)


@dataclass
class Server:
    """A child process that logs `serving on URL` to stderr once it listens."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_url(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _URL.search(self.log())
            if match:
                self.url = match.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 3) -> None:
        """Signal the child and wait; SIGKILL it if it has not exited after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"{self.name} did not exit {timeout:g} s after signal {sig}; killing it", file=sys.stderr
                )
                self.proc.kill()
                self.proc.wait(5)
        _LIVE.discard(self.proc)

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def _pythonpath() -> str:
    """This checkout first (so `-m benchmarks.servers...` resolves), then whatever was set."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def spawn(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Server:
    """Start `python ARGV...` in `workdir` with its output in a log file; do not wait."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})},
            preexec_fn=_die_with_parent,
        )
    _LIVE.add(proc)
    return Server(name, proc, log_path)


def start(name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None) -> Server:
    """Spawn and wait until the child says where it listens; kill it if it never does."""
    server = spawn(name, argv, workdir, env)
    try:
        server.wait_url()
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    return server


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    server = start(name, argv, workdir, env)
    try:
        yield server
    finally:
        server.stop()


def statefulmcp_argv(*paths: str | Path, port: int = 0, extra: Sequence[str] = ()) -> list[str]:
    return [
        "-m",
        "statefulmcp.cli",
        "serve",
        *map(str, paths),
        "--http",
        f"127.0.0.1:{port}",
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(base: str, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll `base/ready` until it answers 200; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(f"{base}/ready").status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before /ready")
            time.sleep(0.002)
    raise RuntimeError(f"{base}/ready did not answer 200 within {timeout} s")


_HELP: list[str] = []


def cli_supports(flag: str) -> bool:
    """Whether `statefulmcp serve` accepts `flag` (features land while the benchmarks exist)."""
    if not _HELP:
        done = subprocess.run(
            [sys.executable, "-m", "statefulmcp.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
        _HELP.append(done.stdout)
    return flag in _HELP[0]
