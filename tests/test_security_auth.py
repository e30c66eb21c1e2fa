"""Who may talk to the server: Host/Origin checks on every binding, bearer tokens, the admin scope.

Bad headers are sent raw (httpx), as an attacker's page or a rebinding DNS name would; the good
path goes through the SDK's own client with a token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from conftest import (
    COMPONENTS,
    EXAMPLES,
    INITIALIZE,
    POST_HEADERS,
    error,
    http_session,
    running,
    stdio_session,
    value,
)

pytestmark = pytest.mark.anyio

CALLER = "c" * 32
ADMIN = "a" * 32


def post(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url, content=json.dumps(INITIALIZE), headers={**POST_HEADERS, **headers}, timeout=30)


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "127.0.0.2:0", "127.0.0.1:0"])
def test_host_and_origin_are_checked_on_every_binding(tmp_path: Path, bind: str) -> None:
    with running(EXAMPLES / "counter.py", tmp=tmp_path, bind=bind) as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        assert post(url, host="evil.example", origin="http://evil.example").status_code == 421
        assert post(url, origin="http://evil.example").status_code == 403
        assert post(url).status_code == 200  # the address it was reached at
        log = server.log()
    public = bind.startswith("0.0.0.0")
    assert ("without authentication" in log) is public  # loud only where it matters


def test_allowed_hosts_and_advertise_widen_the_checks(tmp_path: Path) -> None:
    args = (
        EXAMPLES / "counter.py",
        "--advertise",
        "https://tools.example.com/mcp",
        "--allowed-hosts",
        "gw.internal:*",
    )
    with running(*args, tmp=tmp_path, bind="0.0.0.0:0") as server:
        url = server.url.replace("0.0.0.0", "127.0.0.1")
        assert post(url, host="tools.example.com", origin="https://tools.example.com").status_code == 200
        assert post(url, host="gw.internal:8443").status_code == 200
        assert post(url, host="tools.example.com.evil.example").status_code == 421
        assert post(url, host="127.0.0.1.evil.example").status_code == 421


async def test_with_a_token_file_every_call_needs_a_token_and_admin_tools_the_admin_scope(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# callers\n{CALLER}\n{ADMIN} statefulmcp:call statefulmcp:admin\n")
    args = (EXAMPLES / "counter.py", "--auth-token-file", tokens, "--allow-load", EXAMPLES)
    with running(*args, tmp=tmp_path) as server:
        missing = post(server.url)
        assert missing.status_code == 401
        assert "resource_metadata=" in missing.headers["www-authenticate"]
        assert post(server.url, authorization="Bearer " + "x" * 32).status_code == 401
        metadata = httpx.get(f"{server.base}/.well-known/oauth-protected-resource/mcp", timeout=30).json()
        assert metadata["resource"] == server.url
        assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200  # probes stay open
        async with http_session(server.url, token=CALLER) as session:
            assert value(await session.call_tool("counter_increment", {"by": 2})) == 2
            refused = error(await session.call_tool("unload_component", {"name": "counter"}))
            assert "needs a token with the scope statefulmcp:admin" in refused
            assert value(await session.call_tool("counter_increment", {"by": 1})) == 3  # nothing unloaded
        async with http_session(server.url, token=ADMIN) as session:
            assert (
                value(await session.call_tool("unload_component", {"name": "counter"}))["unloaded"]
                == "counter"
            )


async def test_the_environment_token_has_both_scopes(tmp_path: Path) -> None:
    env = {"STATEFULMCP_AUTH_TOKEN": ADMIN}
    with running(EXAMPLES / "counter.py", "--allow-load", EXAMPLES, tmp=tmp_path, env=env) as server:
        assert post(server.url).status_code == 401
        async with http_session(server.url, token=ADMIN) as session:
            assert (
                value(await session.call_tool("unload_component", {"name": "counter"}))["unloaded"]
                == "counter"
            )


def test_a_short_token_or_a_verifier_without_issuer_stops_start_up(tmp_path: Path) -> None:
    from conftest import start_server

    tokens = tmp_path / "tokens"
    tokens.write_text("short\n")
    server = start_server(EXAMPLES / "counter.py", "--auth-token-file", tokens, tmp=tmp_path, wait=False)
    assert server.proc.wait(30) == 2
    assert "at least 16 characters" in server.log()
    server = start_server(EXAMPLES / "counter.py", "--auth-verifier", "json:loads", tmp=tmp_path, wait=False)
    assert server.proc.wait(30) == 2
    assert "--auth-verifier needs --auth-issuer" in server.log()


async def test_calls_to_another_server_carry_the_token_named_by_token_env(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{CALLER}\n")
    with (
        running(EXAMPLES / "text.py", "--auth-token-file", tokens, tmp=tmp_path / "remote") as remote,
        running(
            COMPONENTS / "auth_caller.py",
            tmp=tmp_path / "local",
            env={"REMOTE_URL": remote.url, "REMOTE_TOKEN": CALLER},
        ) as local,
    ):
        async with http_session(local.url) as session:
            assert value(await session.call_tool("auth_caller_count", {"text": "a b c", "token": True})) == 3
            refused = error(await session.call_tool("auth_caller_count", {"text": "a b", "token": False}))
            assert "requires authentication (401)" in refused and "token_env" in refused


def _sources(listed: dict[str, object]) -> set[str]:
    components = listed["components"]
    assert isinstance(components, list)
    return {str(c["source"]) for c in components}


async def test_list_components_shows_file_names_and_full_paths_only_to_admins(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{CALLER}\n{ADMIN} statefulmcp:call statefulmcp:admin\n")
    full = str((EXAMPLES / "counter.py").resolve())
    with running(EXAMPLES / "counter.py", tmp=tmp_path / "open") as server:
        async with http_session(server.url) as session:
            assert _sources(value(await session.call_tool("list_components", {}))) == {"counter.py"}
    with running(EXAMPLES / "counter.py", "--auth-token-file", tokens, tmp=tmp_path / "auth") as server:
        async with http_session(server.url, token=CALLER) as session:
            assert _sources(value(await session.call_tool("list_components", {}))) == {"counter.py"}
        async with http_session(server.url, token=ADMIN) as session:
            assert _sources(value(await session.call_tool("list_components", {}))) == {full}
    async with stdio_session(EXAMPLES / "counter.py", cwd=tmp_path) as session:  # the operator's own process
        assert _sources(value(await session.call_tool("list_components", {}))) == {full}


def test_a_redacted_listing_keeps_no_host_directory_of_a_wasm_policy() -> None:
    from statefulmcp.transport.admin import _redacted

    listed = {
        "name": "notes",
        "source": "/srv/app/components/notes.wasm",
        "details": {
            "policy": "/srv/app/components/notes.toml",
            "dirs": [{"host": "/srv/data/notes", "guest": "/data", "mode": "read-write"}],
        },
    }
    shown = _redacted(listed)
    assert "/srv" not in json.dumps(shown)
    assert shown["source"] == "notes.wasm" and shown["details"]["policy"] == "notes.toml"
    assert shown["details"]["dirs"] == [{"guest": "/data", "mode": "read-write"}]


def test_a_forged_host_is_refused_before_any_token_is_asked_for(tmp_path: Path) -> None:
    env = {"STATEFULMCP_AUTH_TOKEN": ADMIN}
    with running(EXAMPLES / "counter.py", tmp=tmp_path, env=env) as server:
        assert post(server.url, host="evil.example").status_code == 421
        assert post(server.url, origin="http://evil.example").status_code == 403
        assert post(server.url).status_code == 401


def test_a_session_belongs_to_its_token_and_each_token_has_its_own_session_cap(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{CALLER}\n{ADMIN} statefulmcp:call statefulmcp:admin\n")
    args = (EXAMPLES / "counter.py", "--auth-token-file", tokens, "--max-sessions-per-client", "1")
    caller, admin = {"authorization": f"Bearer {CALLER}"}, {"authorization": f"Bearer {ADMIN}"}
    session_headers = {"mcp-protocol-version": "2025-11-25", "accept": "text/event-stream"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    with running(*args, tmp=tmp_path) as server:
        opened = post(server.url, **admin)
        assert opened.status_code == 200
        session = {**session_headers, "mcp-session-id": opened.headers["mcp-session-id"]}
        borrowed = httpx.post(
            server.url, json=ping, headers={**POST_HEADERS, **session, **caller}, timeout=30
        )
        assert borrowed.status_code == 404  # another token cannot use the admin's session
        with httpx.stream("GET", server.url, headers={**session, **admin}, timeout=30) as busy:
            assert busy.status_code == 200  # the admin's one session is busy: its cap is full
            assert post(server.url, **admin).status_code == 429
            assert post(server.url, **caller).status_code == 200  # another token's cap is its own


def test_with_authentication_ready_keeps_its_reason_to_the_log(tmp_path: Path) -> None:
    env = {"STATEFULMCP_AUTH_TOKEN": ADMIN}
    with running(COMPONENTS / "probe.py", "--state", "s.db", tmp=tmp_path, env=env) as server:
        assert httpx.get(f"{server.base}/ready", timeout=30).status_code == 200
        (tmp_path / "s.db").unlink()
        deadline = time.monotonic() + 30
        while (answer := httpx.get(f"{server.base}/ready", timeout=30)).status_code != 503:
            assert time.monotonic() < deadline, "the lost state file was never reported"
        assert answer.json() == {"status": "not ready"}
        assert "deleted or replaced" in server.log()


async def test_an_oauth_verifier_accepts_only_tokens_issued_for_this_server(tmp_path: Path) -> None:
    from oauth_verifier import RESOURCE

    args = (
        EXAMPLES / "counter.py",
        "--auth-verifier",
        "oauth_verifier:Verifier",
        "--auth-issuer",
        "https://auth.example.com",
        "--advertise",
        RESOURCE,
    )
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    with running(*args, tmp=tmp_path, env=env) as server:
        metadata = httpx.get(f"{server.base}/.well-known/oauth-protected-resource/mcp", timeout=30).json()
        assert metadata["resource"] == RESOURCE
        assert metadata["authorization_servers"] == ["https://auth.example.com"]
        assert post(server.url, authorization="Bearer oauth-token-for-another-one").status_code == 401
        async with http_session(server.url, token="oauth-token-for-this-server") as session:
            assert value(await session.call_tool("counter_increment", {"by": 5})) == 5


def test_an_oauth_verifier_on_a_public_address_needs_the_advertised_url(tmp_path: Path) -> None:
    from conftest import start_server

    args = ("--auth-verifier", "oauth_verifier:Verifier", "--auth-issuer", "https://auth.example.com")
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    server = start_server(EXAMPLES / "counter.py", *args, tmp=tmp_path, env=env, bind="0.0.0.0:0", wait=False)
    assert server.proc.wait(30) == 2
    assert "needs --advertise URL" in server.log()
