"""A fork server for the test suite: real `statefulmcp serve` processes without the import bill.

A run starts a few hundred server processes, and each one spent about 1.2 s of CPU importing the
`mcp` SDK and the host before it served: on two cores that was more than half of `make test`. So
each pytest worker starts this module once as a script. It imports the host (single-threaded:
nothing here starts a thread or an event loop, which is what makes forking safe), listens on a
unix socket, and forks one child per launch. The child takes the caller's argv, working directory,
environment, `$PYTHONPATH` and stdio (passed as file descriptors), then runs
`statefulmcp.cli.main` exactly as `python -m statefulmcp.cli` would. Exit codes and signals are the
real ones: a test's `kill -9` is `os.kill(pid, SIGKILL)` on the server's own pid, and the fork
server reports the status it reaped as `subprocess.Popen` would (negative for a signal).

What differs from exec: the children share one hash seed; interpreter start-up options read from
other `PYTHON*` variables are the fork server's; and a clean exit skips tearing down every module
(atexit hooks, flushes and the wait for non-daemon threads still happen). Tests that must exercise
a fresh interpreter (the raw stdio tests that kill their server, the CLI's own start-up,
`test_users`) still exec. The SDK's stdio client spawns its server itself: it is handed
`--attach`, a 40 ms stdlib-only process that passes its own stdio to a forked server, forwards
signals, and exits as the server does. Set `STATEFULMCP_TEST_EXEC=1` to run every server with
plain exec instead, to rule this module out when a test fails.

The wire protocol, one connection per launch: the client sends one JSON line (`args`, `cwd`,
`env`) with three file descriptors (stdin, stdout, stderr) attached; the server answers with a
JSON line `{"pid": N}` once forked and `{"returncode": R}` once it reaped the child, then closes.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_MAX_MESSAGE = 1 << 20


@dataclass
class _Launch:
    args: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]


def _receive(conn: socket.socket) -> _Launch:
    message, fds, _flags, _address = socket.recv_fds(conn, _MAX_MESSAGE, 3)
    while not message.endswith(b"\n"):
        more = conn.recv(_MAX_MESSAGE)
        if not more:
            raise ConnectionError("launch request cut short")
        message += more
    request = json.loads(message)
    return _Launch(list(request["args"]), str(request["cwd"]), dict(request["env"]), list(fds))


def _serve(path: str) -> _Launch:
    """Fork a child per launch request; returns only in a child, with what that child must run.

    Exits when stdin closes (the pytest worker that started it is gone), killing the children
    still running so no server outlives the test run.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _events in selector.select():
            if key.fileobj == 0:
                if not os.read(0, 4096):
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                    raise SystemExit(0)
            elif key.fileobj is listener:
                conn, _address = listener.accept()
                try:
                    launch = _receive(conn)
                except (OSError, ValueError, KeyError) as exc:
                    print(f"bad launch request: {exc!r}", file=sys.stderr, flush=True)
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    selector.close()
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    listener.close()
                    for other in children.values():
                        other.close()
                    conn.close()
                    return launch
                for fd in launch.fds:
                    os.close(fd)
                children[pid] = conn
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            else:
                while True:
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        break
                _reap(children)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        with contextlib.suppress(OSError):  # the test side may have given up on this child
            conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        conn.close()


def _pythonpath(value: str) -> list[str]:
    return [os.path.abspath(entry) for entry in value.split(os.pathsep) if entry]


def _become(launch: _Launch) -> None:
    """Turn this forked child into `python -m statefulmcp.cli ARGS` run from `launch.cwd`."""
    for target, fd in enumerate(launch.fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The path `python -m` would start with: the working directory, then $PYTHONPATH, then the rest.
    inherited = _pythonpath(os.environ.get("PYTHONPATH", ""))
    rest = [entry for entry in sys.path[1:] if entry not in inherited]
    os.chdir(launch.cwd)
    sys.path[:] = [launch.cwd, *_pythonpath(launch.env.get("PYTHONPATH", "")), *rest]
    os.environ.clear()
    os.environ.update(launch.env)
    import statefulmcp.cli

    sys.argv = [str(statefulmcp.cli.__file__), *launch.args]
    statefulmcp.cli.main(launch.args)


class Child:
    """A process the fork server started: the part of `subprocess.Popen` the tests use.

    Safe to poll from one thread while another waits (the checker stops replicas on threads).
    """

    def __init__(self, conn: socket.socket, pid: int, buffer: bytes) -> None:
        self._conn = conn
        self._buffer = buffer
        self._lock = threading.Lock()
        self.pid = pid
        self.returncode: int | None = None

    def _collect(self, timeout: float | None) -> int | None:
        """The exit status if it arrives within `timeout` seconds (None: wait for it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            return self.returncode
        try:
            while self.returncode is None:
                if b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    self.returncode = int(json.loads(line)["returncode"])
                    self._conn.close()
                    break
                if deadline is not None:
                    readable = select.poll()
                    readable.register(self._conn, select.POLLIN)
                    if not readable.poll(max(0.0, deadline - time.monotonic()) * 1000):
                        break
                more = self._conn.recv(4096)
                if not more:
                    raise RuntimeError(f"the fork server went away while child {self.pid} ran")
                self._buffer += more
        finally:
            self._lock.release()
        return self.returncode

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None else self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self.returncode if self.returncode is not None else self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        # Checked first, as Popen does: the pid of a reaped child may already be someone else's.
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _spawn(path: str, args: list[str], *, cwd: str, env: dict[str, str], fds: list[int]) -> Child:
    """Ask the fork server at `path` for `statefulmcp.cli ARGS` with these stdin, stdout, stderr."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = json.dumps({"args": args, "cwd": cwd, "env": env}).encode() + b"\n"
    socket.send_fds(conn, [request], fds)
    buffer = b""
    while b"\n" not in buffer:
        more = conn.recv(4096)
        if not more:
            conn.close()
            raise RuntimeError("the fork server refused the launch (see its stderr)")
        buffer += more
    line, rest = buffer.split(b"\n", 1)
    return Child(conn, int(json.loads(line)["pid"]), rest)


class ForkServer:
    """One fork server process, started on first use (per pytest worker)."""

    def __init__(self, directory: Path) -> None:
        self._path = str(directory / "forkserver.sock")
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _started(self) -> str:
        with self._lock:
            if self._proc is None:
                proc = subprocess.Popen(
                    [sys.executable, __file__, self._path],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the fork server did not start (exit {proc.wait()})")
                self._proc = proc
            return self._path

    def launch(self, args: list[str], *, cwd: Path, env: dict[str, str], stdout: int, stderr: int) -> Child:
        """Start `python -m statefulmcp.cli ARGS` in `cwd` with `env` and these stdio descriptors."""
        with open(os.devnull, "rb") as stdin:
            return _spawn(self._started(), args, cwd=str(cwd), env=env, fds=[stdin.fileno(), stdout, stderr])

    def command(self, args: list[str]) -> list[str]:
        """A command line that runs `statefulmcp.cli ARGS` from this fork server on its own stdio
        (a few stdlib imports, not the host's), for clients that spawn their server."""
        return [sys.executable, "-I", "-S", __file__, "--attach", self._started(), *args]

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(30)
                self._proc = None


_PRELOAD = (
    "statefulmcp.cli",
    # What serving imports on first use (the HTTP protocol, anyio's backend).
    "anyio._backends._asyncio",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    # What calls to other servers (forwarding between replicas, `uses=`) and schemas import.
    "httpcore2",
    "jsonschema",
)


def _attach(path: str, args: list[str]) -> None:
    """Run `statefulmcp.cli ARGS` from the fork server on this process's own stdio, and exit as it
    does: for clients that spawn a command themselves (the SDK's stdio client). Signals this
    process gets are passed on; EOF on the server's stdin reaches it directly."""
    child = _spawn(path, args, cwd=os.getcwd(), env=dict(os.environ), fds=[0, 1, 2])
    # Only the server holds the pipes now: its exit is their end for the client.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda received, _frame: child.send_signal(received))
    code = child.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    raise SystemExit(code)


def _main(argv: list[str]) -> None:
    if argv[0] == "--attach":
        _attach(argv[1], argv[2:])
    for name in _PRELOAD:
        importlib.import_module(name)
    from statefulmcp.remote import tls_context

    tls_context()  # a CA bundle parsed once, not once per server that forwards

    # Forking is only safe from a single thread: nothing imported above may have started one.
    assert threading.active_count() == 1, threading.enumerate()
    # What is imported stays: out of the collector's sight, its pages stay shared with the
    # children instead of being copied into each one the first time a collection walks them.
    gc.collect()
    gc.freeze()
    launch = _serve(argv[0])
    try:
        _become(launch)
    except SystemExit as exc:
        _leave(exc.code)


def _leave(code: object) -> None:
    """Exit as Python would, minus tearing down every module (0.2 s of CPU per server).

    Everything an exit does that a test could observe still happens: atexit hooks run, streams are
    flushed, and a live non-daemon thread makes this a normal exit, which waits for it as Python does.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    _main(sys.argv[1:])
