"""Who may talk to the HTTP endpoint: Host and Origin checks on every binding, and bearer tokens.

The SDK turns its DNS-rebinding checks on only when the bind address is exactly `127.0.0.1`,
`localhost` or `::1`; bound to `0.0.0.0` (or `127.0.0.2`) it checks nothing. Here the checks are
always built, from the binding, `--advertise` and `--allowed-hosts` / `--allowed-origins`.

Authentication is the MCP authorization spec's resource-server role, with the SDK's own
pieces: a `TokenVerifier` checks each bearer token, the SDK's middleware refuses requests
without one (401 with a `WWW-Authenticate` pointing at the protected-resource metadata, which
is served). Two verifiers: `StaticTokens` (a token file, for private deployments) or the
operator's own (`--auth-verifier module:attr`, e.g. JWT checks against an OAuth server).

Scopes: every MCP request needs `statefulmcp:call`; the admin tools (`load_component`,
`unload_component`) also need `statefulmcp:admin`.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

log = logging.getLogger("statefulmcp.auth")

CALL_SCOPE = "statefulmcp:call"
"""Needed for every request to the MCP endpoint when authentication is on."""

ADMIN_SCOPE = "statefulmcp:admin"
"""Needed, beside `CALL_SCOPE`, to load or unload components."""

TOKEN_ENV = "STATEFULMCP_AUTH_TOKEN"
"""One static token from the environment, with both scopes (the operator's own token)."""

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class AuthConfigError(Exception):
    """Authentication or origin settings that cannot be used; the message says what to fix."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticTokens(TokenVerifier):
    """Bearer tokens listed in a file: one per line, `TOKEN [SCOPE ...]`, `#` starts a comment.

    A line without scopes grants `statefulmcp:call`. Tokens are kept only as SHA-256 digests and
    looked up by digest, so neither the lookup's timing nor a memory dump gives a token away.
    """

    def __init__(self, tokens: dict[str, list[str]]) -> None:
        self._scopes = {_digest(token): scopes for token, scopes in tokens.items()}

    @classmethod
    def from_sources(cls, path: Path | None) -> StaticTokens | None:
        """Tokens from `path` and from `$STATEFULMCP_AUTH_TOKEN`; None when neither gives one."""
        tokens: dict[str, list[str]] = {}
        if path is not None:
            try:
                text = path.read_text()
            except OSError as exc:
                raise AuthConfigError(f"--auth-token-file {path}: {exc.strerror}") from None
            for number, line in enumerate(text.splitlines(), 1):
                words = line.split("#", 1)[0].split()
                if not words:
                    continue
                if len(words[0]) < 16:
                    raise AuthConfigError(
                        f"--auth-token-file {path}, line {number}: a token must be at least 16 characters "
                        "(use `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                    )
                tokens[words[0]] = words[1:] or [CALL_SCOPE]
            if not tokens:
                raise AuthConfigError(f"--auth-token-file {path}: no tokens in it")
        env = os.environ.get(TOKEN_ENV, "").strip()
        if env:
            if len(env) < 16:
                raise AuthConfigError(f"${TOKEN_ENV}: a token must be at least 16 characters")
            tokens[env] = [CALL_SCOPE, ADMIN_SCOPE]
        return cls(tokens) if tokens else None

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = _digest(token)
        scopes = self._scopes.get(digest)
        if scopes is None:
            return None
        # Each token is its own client: the SDK binds a session to the client that opened it, so
        # a session cannot be used with another token, and session caps count per token.
        return AccessToken(token=token, client_id=f"token-{digest[:6].hex()}", scopes=list(scopes))


def load_verifier(reference: str) -> TokenVerifier:
    """The operator's verifier named `module:attr`: an object with `verify_token`, or a class or
    other no-argument callable returning one."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise AuthConfigError(f"--auth-verifier {reference!r}: write MODULE:ATTRIBUTE")
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AuthConfigError(f"--auth-verifier {reference!r}: {type(exc).__name__}: {exc}") from None
    # A class has `verify_token` too (unbound): it is a factory like any no-argument callable.
    verifier = target
    if not hasattr(target, "verify_token") or isinstance(target, type):
        try:
            verifier = target()
        except Exception as exc:  # noqa: BLE001 - the operator's code: any failure stops start-up, named
            raise AuthConfigError(
                f"--auth-verifier {reference!r}: making the verifier failed: {type(exc).__name__}: {exc}"
            ) from None
    if not hasattr(verifier, "verify_token"):
        raise AuthConfigError(f"--auth-verifier {reference!r}: it has no verify_token method")
    return verifier  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Access:
    """Everything the HTTP app needs to decide who may talk to it."""

    security: TransportSecuritySettings
    auth: AuthSettings | None = None
    verifier: TokenVerifier | None = None


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, port: int, advertise: str | None, extra: list[str]) -> list[str]:
    """Host header values to accept: the loopback names (any port), the bound address, the
    advertised URL's host, and whatever the operator added."""
    hosts = [f"{name}:*" for name in _LOOPBACK_NAMES] + list(_LOOPBACK_NAMES)
    if bind_host not in ("0.0.0.0", "::", ""):
        hosts += [_shown(bind_host), f"{_shown(bind_host)}:{port}"]
    if advertise:
        url = urlsplit(advertise)
        if url.hostname:
            hosts.append(url.netloc.rsplit("@", 1)[-1])
            hosts.append(_shown(url.hostname))
    return _unique(hosts + extra)


def allowed_origins(hosts: list[str], extra: list[str]) -> list[str]:
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return _unique(origins + extra)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def build_access(
    *,
    bind_host: str,
    port: int,
    advertise: str | None,
    hosts: list[str],
    origins: list[str],
    token_file: Path | None,
    verifier_ref: str | None,
    issuer: str | None,
) -> Access:
    """Resolve the flags into checks, and warn when a public binding has no authentication."""
    if "*" in hosts:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        log.warning(
            "--allowed-hosts '*': Host and Origin checks are off; only do this behind a reverse proxy "
            "that checks them"
        )
    else:
        accepted = allowed_hosts(bind_host, port, advertise, hosts)
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=accepted,
            allowed_origins=allowed_origins(accepted, origins),
        )
    verifier: TokenVerifier | None
    if verifier_ref is not None and token_file is not None:
        raise AuthConfigError("--auth-verifier and --auth-token-file exclude each other; pick one")
    if verifier_ref is not None:
        if issuer is None:
            raise AuthConfigError(
                "--auth-verifier needs --auth-issuer URL: the authorization server clients get tokens from"
            )
        if advertise is None and not is_loopback(bind_host):
            raise AuthConfigError(
                f"--auth-verifier on {_shown(bind_host)} needs --advertise URL: OAuth tokens are issued "
                "for the URL clients use (the resource), and this server cannot guess it"
            )
        verifier = load_verifier(verifier_ref)
    else:
        verifier = StaticTokens.from_sources(token_file)
    if verifier is None:
        if not is_loopback(bind_host):
            log.warning(
                "serving on %s without authentication: anyone who can reach this address can call every "
                "tool. Pass --auth-token-file FILE (or set $%s), or --auth-verifier for OAuth tokens",
                _shown(bind_host),
                TOKEN_ENV,
            )
        return Access(security)
    if advertise is None and not is_loopback(bind_host):
        log.warning(
            "serving on %s with authentication but without --advertise URL: the protected-resource "
            "metadata names http://127.0.0.1:%d/mcp as this server; pass --advertise with the URL "
            "clients use",
            _shown(bind_host),
            port,
        )
    resource = (
        advertise or f"http://{_shown(bind_host if is_loopback(bind_host) else '127.0.0.1')}:{port}/mcp"
    )
    auth = AuthSettings(
        issuer_url=issuer or resource,  # type: ignore[arg-type]
        resource_server_url=resource,  # type: ignore[arg-type]
        required_scopes=[CALL_SCOPE],
        # The MCP authorization spec: accept only tokens issued for this server (RFC 8707), so a
        # token a client got for another service cannot be replayed here. Static tokens are
        # this server's by construction.
        validate_token_resource=verifier_ref is not None,
    )
    return Access(security, auth, verifier)


def has_scope(request: Any, scope: str) -> bool:
    """Whether the HTTP request behind an MCP request carries a token with `scope`."""
    user = getattr(request, "scope", {}).get("user") if request is not None else None
    token = getattr(user, "access_token", None)
    return token is not None and scope in token.scopes
