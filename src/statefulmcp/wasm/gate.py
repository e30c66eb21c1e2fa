"""The loopback forwarder every granted `wasi:http` request goes through.

wasmtime's own `wasi:http` client connects to whatever authority a request names and resolves
it itself, and its C API has no hook to inspect or redirect a request. So the host checks each
request first (`network.check`: the grant, then every resolved address), registers the checked
target here under an unguessable one-shot token, and rewrites the request to
`http://127.0.0.1:<gate port>/<token><path>`. wasmtime then delivers it here, and this thread
sends it on to a checked address (never resolving the name again), with TLS to the real name
for https, within the policy's time and size bounds.

The server runs only while requests are pending or in flight, and ends `LINGER_SECONDS` after
the last one (like the epoch ticker): an idle server holds no thread and no port. At most
`MAX_OPEN_REQUESTS` are registered or in flight at once; beyond that a request is refused.
Failures the upstream never answered for (connection refused, TLS, timeouts, a body over its
bound) are answered with 502 or 504 and a text body that says why, as a proxy does, and logged.
"""

from __future__ import annotations

import http.client
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from statefulmcp._errors import NetworkDenied
from statefulmcp.wasm.network import Target

log = logging.getLogger("statefulmcp.wasm")

LINGER_SECONDS = 5.0
MAX_OPEN_REQUESTS = 64
_CHUNK = 64 * 1024
_DISCARD = 64 * 1024 * 1024
"""Bytes of a refused request body read and dropped before the 413; past it the connection closes."""
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class _TooLarge(Exception):
    pass


class _Pinned(http.client.HTTPConnection):
    """A connection to the checked addresses of a target, TLS-verified against its name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.target = target
        self.pinned: socket.socket | None = None
        """The socket itself: http.client lets go of `sock` once the response owns it."""

    def connect(self) -> None:
        last: OSError | None = None
        for address in self.target.addresses:
            try:
                sock = socket.create_connection((address, self.target.port), self.timeout)
                break
            except OSError as exc:
                last = exc
        else:
            assert last is not None
            raise last
        if self.target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.target.host)
        self.sock = self.pinned = sock


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """The gate's own access log stays quiet; refusals and failures are logged where they happen."""

    def _forward(self) -> None:
        self.close_connection = True
        token, _, rest = self.path[1:].partition("/")
        target = self.server.gate.take(token)
        if target is None:
            self._answer(404, "statefulmcp: unknown or used request token")
            return
        try:
            self._send(target, "/" + rest)
        finally:
            self.server.gate.done()

    def _send(self, target: Target, path: str) -> None:
        deadline = time.monotonic() + target.timeout_seconds
        try:
            body = self._request_body(target.max_request_bytes)
        except _TooLarge:
            self._fail(
                target, 413, f"request body larger than max_request_bytes ({target.max_request_bytes})"
            )
            return
        conn = _Pinned(target, target.timeout_seconds)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.authority)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = self._response_body(conn, response, target, deadline)
        except _TooLarge:
            self._fail(target, 502, f"response larger than max_response_bytes ({target.max_response_bytes})")
            return
        except TimeoutError:
            self._fail(target, 504, f"no complete answer within timeout_seconds ({target.timeout_seconds:g})")
            return
        except (OSError, http.client.HTTPException) as exc:
            self._fail(target, 502, f"{type(exc).__name__}: {exc}")
            return
        finally:
            conn.close()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _request_body(self, limit: int) -> bytes:
        """The guest's request body, or `_TooLarge` past `limit`. A refused body is still read (up
        to `_DISCARD` bytes) before the answer: closing a socket with unread data resets it, and
        the guest would get a protocol error instead of the 413 that says why."""
        chunks: list[bytes] = []
        size = 0
        for chunk in self._body_chunks():
            size += len(chunk)
            if size > _DISCARD:
                self.close_connection = True
                break
            if size <= limit:
                chunks.append(chunk)
        if size > limit:
            raise _TooLarge
        return b"".join(chunks)

    def _body_chunks(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                length = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                yield from self._exactly(length)
                self.rfile.readline(1024)
        yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            chunk = self.rfile.read(min(length, _CHUNK))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk

    def _response_body(
        self, conn: _Pinned, response: http.client.HTTPResponse, target: Target, deadline: float
    ) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if conn.pinned is not None:
                conn.pinned.settimeout(left)
            chunk = response.read1(_CHUNK) if self.command != "HEAD" else b""
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > target.max_response_bytes:
                raise _TooLarge
            chunks.append(chunk)

    def _fail(self, target: Target, status: int, why: str) -> None:
        log.warning(
            "wasm component %r: outgoing request to %s:%d failed: %s",
            target.component,
            target.host,
            target.port,
            why,
        )
        self._answer(status, f"statefulmcp: request to {target.host}:{target.port} failed: {why}")

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_TRACE = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, gate: Gate) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.gate = gate
        self.timeout = 0.5


class Gate:
    """Checked targets by token, and the server that forwards them while any are open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Target, float]] = {}
        self._open = 0
        self._last = 0.0
        self._server: _Server | None = None

    def register(self, target: Target) -> tuple[str, str]:
        """The loopback authority and path prefix to rewrite a checked request to."""
        with self._lock:
            self._expire()
            if self._open >= MAX_OPEN_REQUESTS:
                raise NetworkDenied(
                    f"outgoing request to {target.host}:{target.port} refused: {MAX_OPEN_REQUESTS} requests "
                    "are already open; retry when some finish"
                )
            if self._server is None:
                self._server = _Server(self)
                threading.Thread(
                    target=self._serve, args=(self._server,), name="statefulmcp-wasm-gate", daemon=True
                ).start()
            token = secrets.token_urlsafe(24)
            self._pending[token] = (target, time.monotonic() + target.timeout_seconds + 5)
            self._open += 1
            return f"127.0.0.1:{self._server.server_address[1]}", f"/{token}"

    def take(self, token: str) -> Target | None:
        with self._lock:
            found = self._pending.pop(token, None)
            return None if found is None else found[0]

    def done(self) -> None:
        with self._lock:
            self._open -= 1
            self._last = time.monotonic()

    def _expire(self) -> None:
        """Forget tokens whose request never arrived (the guest dropped it before it was sent)."""
        now = time.monotonic()
        for token, (_, until) in list(self._pending.items()):
            if until < now:
                del self._pending[token]
                self._open -= 1

    def _serve(self, server: _Server) -> None:
        while True:
            server.handle_request()
            with self._lock:
                self._expire()
                if not self._open and time.monotonic() - self._last > LINGER_SECONDS:
                    self._server = None
                    server.server_close()
                    return


gate = Gate()
