"""The replicas under test: real `statefulmcp serve` processes, each with a log file of its own.

Started exactly as an operator would start them (`--state`, `--lease-seconds`, `--audit-commits`,
`--http 127.0.0.1:0`), so the checker tests the product and not a test double. Each binds a free
loopback port; its URL and replica id are read from its log, which it writes before it serves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_SERVING = re.compile(r"serving on (http://\S+)")
_JOINED = re.compile(r"replica (\S+) joined")

START_SECONDS = 60.0
"""How long a replica may take to say where it serves (a loaded 2-core machine is slow)."""


class Process(Protocol):
    """What the checker needs of a replica's process; a `subprocess.Popen` is one."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def exec_replica(args: list[str], directory: Path, log: int) -> Process:
    """`python -m statefulmcp.cli ARGS` in `directory`, stdout and stderr to the descriptor `log`."""
    cmd = [sys.executable, "-m", "statefulmcp.cli", *args]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=dict(os.environ))


launch: Callable[[list[str], Path, int], Process] = exec_replica
"""How replicas are started. The test suite swaps in a fork server (the same program, forked from a
process that already imported it) to spare each replica a second of imports."""


@dataclass
class Replica:
    """One `statefulmcp serve` process. `id` is its replica id in `statefulmcp_replicas`."""

    name: str
    proc: Process
    log_path: Path
    url: str = ""
    id: str = ""
    stopped: bool = False
    """SIGSTOPped and not resumed yet."""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)
        self.stopped = sig == signal.SIGSTOP or (self.stopped and sig != signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop with `sig` and wait; killed if it has not exited in `timeout` seconds."""
        if self.running:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_replica(
    name: str, component: Path, state: str, *, lease: float, directory: Path, extra: tuple[str, ...] = ()
) -> Replica:
    """Start one replica and wait until it serves; raises `RuntimeError` with its log if it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{name}.log"
    args = [
        "serve",
        str(component),
        "--state",
        state,
        "--lease-seconds",
        str(lease),
        "--audit-commits",
        "--http",
        "127.0.0.1:0",
        *extra,
    ]
    with log_path.open("wb") as log:
        proc = launch(args, directory, log.fileno())
    replica = Replica(name, proc, log_path)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        text = replica.log()
        serving, joined = _SERVING.search(text), _JOINED.search(text)
        if serving and joined:
            replica.url, replica.id = serving.group(1), joined.group(1)
            return replica
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"replica {name} exited with {code}:\n{text}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"replica {name} did not serve within {START_SECONDS:g} s:\n{replica.log()}")
