"""One connection cannot cost everyone: header caps, a header-read timeout and a connection cap,
checked through raw sockets (a client library would not send these requests)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from conftest import EXAMPLES, INITIALIZE, POST_HEADERS, http_session, running, value

pytestmark = pytest.mark.anyio


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(30)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@contextmanager
def _connected(url: str) -> Iterator[socket.socket]:
    with closing(socket.create_connection(_address(url), timeout=30)) as sock:
        yield sock


def test_a_request_with_too_many_or_too_large_headers_gets_431_and_health_answers(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", tmp=tmp_path) as server:
        many = b"".join(b"x-h%d: v\r\n" % i for i in range(40_000))
        with _connected(server.url) as sock:
            sock.sendall(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n" + many + b"\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 431")
        with _connected(server.url) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * (10 * 1024 * 1024))
            assert _answer(sock).startswith(b"HTTP/1.1 431")
        assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200
        assert "request headers over 100 fields" in server.log()


def test_headers_that_never_complete_get_408_after_the_header_timeout(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", "--header-timeout", "0.5", tmp=tmp_path) as server:
        with _connected(server.url) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # and nothing more
            assert _answer(sock).startswith(b"HTTP/1.1 408")
        assert "not complete within 0.5 s" in server.log()


async def test_connections_beyond_the_cap_get_503_and_a_client_gets_in_once_they_go(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", "--max-connections", "5", tmp=tmp_path) as server:
        trickling = [socket.create_connection(_address(server.url), timeout=30) for _ in range(5)]
        try:
            for sock in trickling:
                sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # headers never finished
            deadline = time.monotonic() + 30
            while True:  # the sixth connection is refused once the five are counted
                with _connected(server.url) as extra:
                    extra.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    if _answer(extra).startswith(b"HTTP/1.1 503"):
                        break
                assert time.monotonic() < deadline, "the connection cap never bit"
        finally:
            for sock in trickling:
                sock.close()
        assert "5 connections are open (--max-connections)" in server.log()
        async with http_session(server.url) as session:  # once they are gone, a real client works
            assert value(await session.call_tool("counter_increment", {"by": 1})) == 1


def test_a_large_body_after_small_headers_is_not_mistaken_for_headers(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", tmp=tmp_path) as server:
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "' + b"p" * (1024 * 1024) + b'"}'
        response = httpx.post(
            server.url,
            content=body,
            headers=POST_HEADERS,
            timeout=30,
        )
        assert response.status_code != 431


SESSION = "mcp-session-id"


def _open(url: str, headers: dict[str, str] | None = None) -> str:
    """A raw 2025-11-25 session, opened and left idle; its id."""
    answer = httpx.post(
        url, content=json.dumps(INITIALIZE), headers={**POST_HEADERS, **(headers or {})}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.headers[SESSION]


def _ping(url: str, session: str, headers: dict[str, str] | None = None) -> int:
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    session_headers = {SESSION: session, "mcp-protocol-version": "2025-11-25"}
    return httpx.post(
        url, json=ping, headers={**POST_HEADERS, **session_headers, **(headers or {})}, timeout=30
    ).status_code


@contextmanager
def _busy(url: str, session: str, headers: dict[str, str] | None = None) -> Iterator[None]:
    """Hold the session busy with an open GET stream, as a connected client does."""
    stream_headers = {"accept": "text/event-stream", SESSION: session, "mcp-protocol-version": "2025-11-25"}
    with httpx.stream("GET", url, headers={**stream_headers, **(headers or {})}, timeout=30) as stream:
        assert stream.status_code == 200
        yield


def test_a_full_server_closes_its_least_recently_used_idle_session_for_a_new_one(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", "--max-sessions", "2", tmp=tmp_path) as server:
        first, second = _open(server.url), _open(server.url)
        assert _ping(server.url, first) == 200  # `second` is now the least recently used
        third = _open(server.url)
        assert _ping(server.url, second) == 404  # closed for `third`; its client starts anew
        assert _ping(server.url, first) == 200 and _ping(server.url, third) == 200
        assert "closed idle session" in server.log()


def test_busy_sessions_are_never_closed_and_a_full_server_of_them_refuses(tmp_path: Path) -> None:
    init = json.dumps(INITIALIZE)
    with running(EXAMPLES / "counter.py", "--max-sessions", "2", tmp=tmp_path) as server:
        first, second = _open(server.url), _open(server.url)
        with _busy(server.url, first), _busy(server.url, second):
            refused = httpx.post(server.url, content=init, headers=POST_HEADERS, timeout=30)
            assert refused.status_code == 503
        assert _ping(server.url, first) == 200 and _ping(server.url, second) == 200
        assert _ping(server.url, _open(server.url)) == 200  # idle again: one of them made room


def test_one_client_cannot_hold_more_than_its_share_of_sessions(tmp_path: Path) -> None:
    args = ("--max-sessions-per-client", "2")
    with running(EXAMPLES / "counter.py", *args, tmp=tmp_path) as server:
        first, second = _open(server.url), _open(server.url)
        third = _open(server.url)  # the client's own oldest idle session makes room
        assert _ping(server.url, first) == 404 and _ping(server.url, second) == 200
        with _busy(server.url, second), _busy(server.url, third):
            refused = httpx.post(server.url, content=json.dumps(INITIALIZE), headers=POST_HEADERS, timeout=30)
            assert refused.status_code == 429
            assert "2 sessions open" in refused.json()["error"]["message"]


def test_a_session_its_client_closed_frees_its_place_without_closing_another(tmp_path: Path) -> None:
    with running(EXAMPLES / "counter.py", "--max-sessions", "2", tmp=tmp_path) as server:
        first, second = _open(server.url), _open(server.url)
        closed = httpx.delete(server.url, headers={SESSION: first, "mcp-protocol-version": "2025-11-25"})
        assert closed.status_code == 200
        third = _open(server.url)
        assert _ping(server.url, second) == 200 and _ping(server.url, third) == 200
        assert "closed idle session" not in server.log()
