"""Who gets a 2025-11-25 session: a cap per client, and idle sessions evicted before refusing.

The SDK's session manager caps open sessions for everyone together (`--max-sessions`) and
closes a session after `--session-idle-timeout` without a request. Alone, that lets one client
open every session in under a minute and lock every other client out until they expire (10,100
`initialize` calls in 42 s did exactly that). This middleware sits in front of the session
manager, after authentication, and keeps its own table of the sessions the SDK opened (the
`mcp-session-id` answered to a request that had none). Before a request that may open one:

- a client holding `per_client` sessions gives up its least recently used idle one;
- with `max_sessions` open, the least recently used idle session of anyone is closed.

A session is idle when no request of it is in flight (a tool call or an open GET stream keeps
it busy); busy sessions are never closed. When there is nothing idle to close, the new session
is refused: 429 for the client over its own cap, 503 from the SDK for a full server.

Closing is the protocol's own: a DELETE for the session, sent through the app with the
credential and Host of the request that opened it, so the SDK ends the session exactly as if its
client had. That client's next request gets 404, and the spec tells it to open a new session.

A client is its bearer token's identity when authentication is on, else its address: behind a
reverse proxy without authentication, every client shares the proxy's address (uvicorn applies
`X-Forwarded-For` from trusted proxies only), so give such deployments tokens or a higher cap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("statefulmcp.http")

SESSION_HEADER = "mcp-session-id"


@dataclass(slots=True)
class _Session:
    client: str
    headers: list[tuple[bytes, bytes]]
    """Host and protocol version of the opening request, which the transport checks on DELETE."""
    credentials: dict[str, Any]
    """The opening request's authentication (scope `user` and `auth`), which the SDK compares on
    DELETE; this middleware runs after authentication, so the token itself is not kept."""
    last: float
    busy: int = 0


class SessionAdmission:
    """ASGI middleware on `/mcp`: per-client session caps and eviction of idle sessions."""

    def __init__(
        self, app: ASGIApp, *, max_sessions: int, per_client: int, idle_timeout: float, path: str = "/mcp"
    ) -> None:
        self.app = app
        self.max_sessions = max_sessions
        self.per_client = per_client
        self.idle_timeout = idle_timeout
        self.path = path
        # Least recently used first: a request moves its session to the end.
        self._sessions: dict[str, _Session] = {}
        self._held: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        session_id = headers.get(SESSION_HEADER)
        if session_id is not None:
            await self._in_session(session_id, _client(scope), scope, receive, send)
            return
        version = headers.get("mcp-protocol-version")
        if scope["method"] != "POST" or (version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS):
            await self.app(scope, receive, send)  # sessionless (2026-07-28): opens nothing
            return
        client = _client(scope)
        if not await self._admit(client):
            await JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32600,
                        "message": f"this client already has {self.per_client} sessions open, all of them "
                        "busy; end one (HTTP DELETE with its mcp-session-id) or reuse it",
                    },
                },
                status_code=429,
            )(scope, receive, send)
            return

        # The place is held from admission on, so concurrent openings cannot overshoot the cap.
        self._held[client] = self._held.get(client, 0) + 1
        opened: str | None = None

        async def opening(message: Message) -> None:
            nonlocal opened
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened = Headers(raw=message.get("headers", [])).get(SESSION_HEADER)
                if opened is not None:
                    self._track(opened, client, scope, headers)
            await send(message)

        try:
            await self.app(scope, receive, opening)
        finally:
            if opened is None:
                self._release(client)

    async def _in_session(
        self, session_id: str, client: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        session = self._sessions.get(session_id)
        if session is None or session.client != client:
            # Unknown here (expired), or another client's: the SDK answers 404 and nothing of the
            # session changes (it belongs to the credential that opened it).
            await self.app(scope, receive, send)
            return
        self._sessions[session_id] = self._sessions.pop(session_id)  # most recently used
        session.busy += 1
        status = 0
        answered = False

        def done() -> None:
            nonlocal answered
            if not answered:
                answered = True
                session.busy -= 1
                session.last = time.monotonic()

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Idle once its answer is complete, not when the app returns a little later: a
                # client that has its answer and opens another session must find this one idle.
                done()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            done()
            if status == 404 or (scope["method"] == "DELETE" and 200 <= status < 300):
                self._forget(session_id)

    async def _admit(self, client: str) -> bool:
        """Make room for one more session of `client`; False if its own cap is full of busy ones."""
        self._prune()
        if self._held.get(client, 0) >= self.per_client and not await self._evict(client):
            return False
        if len(self._sessions) >= self.max_sessions:
            await self._evict(None)  # nothing idle: the SDK refuses with 503
        return True

    def _prune(self) -> None:
        """Forget sessions the SDK has closed for idleness by now (oldest first)."""
        cutoff = time.monotonic() - self.idle_timeout
        for session_id, session in list(self._sessions.items()):
            if session.last >= cutoff:
                break
            if session.busy == 0:
                self._forget(session_id)

    async def _evict(self, client: str | None) -> bool:
        """Close the least recently used idle session (of `client`, or of anyone)."""
        idle = (
            (session_id, session)
            for session_id, session in self._sessions.items()
            if session.busy == 0 and (client is None or session.client == client)
        )
        found = next(idle, None)
        if found is None:
            return False
        session_id, session = found
        self._forget(session_id)
        status = await self._delete(session_id, session)
        log.info(
            "closed idle session %s of %s to make room for a new one (%s; DELETE answered %d)",
            session_id[:12],
            session.client,
            "its client's cap" if client is not None else "the server's cap",
            status,
        )
        return True

    async def _delete(self, session_id: str, session: _Session) -> int:
        """End the session through the app, as its own client would (DELETE with its credential)."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [*session.headers, (SESSION_HEADER.encode(), session_id.encode())],
            "client": None,
            "server": None,
        }
        scope.update(session.credentials)
        status = 0
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        try:
            await self.app(scope, receive, send)
        except Exception:  # the session is forgotten either way; the SDK expires it in time
            log.exception("closing idle session %s failed", session_id[:12])
        return status

    def _track(self, session_id: str, client: str, scope: Scope, headers: Headers) -> None:
        kept = [
            (name.encode(), headers[name]) for name in ("host", "mcp-protocol-version") if name in headers
        ]
        self._sessions[session_id] = _Session(
            client=client,
            headers=[(name, value.encode("latin-1")) for name, value in kept],
            credentials={name: scope[name] for name in ("user", "auth") if name in scope},
            last=time.monotonic(),
        )

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._release(session.client)

    def _release(self, client: str) -> None:
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]


def _client(scope: Scope) -> str:
    """The token's client when authenticated (each token is its own client), else the address."""
    token = getattr(scope.get("user"), "access_token", None)
    if token is not None:
        return f"client {token.client_id}"
    peer = scope.get("client")
    return f"address {peer[0]}" if peer else "address unknown"
