"""Run-time grants and revokes of a loaded WebAssembly component, through a real server.

A grant reaches instances made after it; a revoke holds at once, so it drops the live
instances (their in-memory state is lost, and the answer says so). The policy file stays as it
is, and `list_components` shows the effective grants, never a config value.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from conftest import error, http_session, local_http, running, text, value
from wasm_components.build import fetch_component, notes_component

pytestmark = pytest.mark.anyio

CALLER = "caller-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


class _Hello(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture
def upstream() -> Iterator[int]:
    with local_http(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)) as server:
        yield server.server_address[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "STATEFULMCP_CACHE_DIR": os.environ.get("STATEFULMCP_CACHE_DIR", str(tmp_path / "cache")),
        "NOTES_GRANT_TEST": "granted at run time",
    }


def details(listed: Any, name: str) -> dict[str, Any]:
    (info,) = [c for c in listed.structured_content["components"] if c["name"] == name]
    found: dict[str, Any] = info["details"]
    return found


@pytest.mark.slow
async def test_grants_reach_new_instances_and_revokes_drop_the_live_ones(
    tmp_path: Path, env: dict[str, str], upstream: int
) -> None:
    allowed = tmp_path / "components"
    (allowed / "shared").mkdir(parents=True)
    (allowed / "shared" / "hello.txt").write_text("hello from the host")
    shutil.copy(notes_component(), allowed / "notes.wasm")
    shutil.copy(fetch_component(), allowed / "fetch.wasm")
    (allowed / "notes.toml").write_text("stateful = true\n")
    with running("--allow-load", allowed, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            for path in ("notes.wasm", "fetch.wasm"):
                loaded = await session.call_tool("load_component", {"path": path})
                assert not loaded.is_error, text(loaded)

            async def call(tool: str, **arguments: Any) -> Any:
                return await session.call_tool(tool, arguments)

            assert value(await call("notes_add_note", text="kept")) == 1
            assert value(await call("notes_get_env", name="NOTES_GRANT_TEST")) is None
            granted = await call(
                "grant_permissions",
                component="notes",
                env=["NOTES_GRANT_TEST"],
                dirs=[{"host": "shared", "guest": "/shared", "mode": "read-only"}],
            )
            assert not granted.is_error and "live instances keep" in text(granted), text(granted)
            # The live instance keeps the sandbox it was made with, and its memory.
            assert value(await call("notes_get_env", name="NOTES_GRANT_TEST")) is None
            assert value(await call("notes_list_notes")) == ["kept"]
            shown = details(await call("list_components"), "notes")
            assert shown["env"] == ["NOTES_GRANT_TEST"] and shown["grants_changed"] is True
            assert [d["guest"] for d in shown["dirs"]] == ["/shared"]

            revoked = await call("revoke_permissions", component="notes", env=["NOTES_GRANT_TEST"])
            assert "Dropped its 1 live instance(s)" in text(revoked) and "state was lost" in text(revoked)
            assert revoked.structured_content is not None
            assert revoked.structured_content["dropped_instances"] == 1
            assert value(await call("notes_list_notes")) == []  # a fresh instance
            assert value(await call("notes_read_file", path="/shared/hello.txt")) == "hello from the host"
            assert value(await call("notes_get_env", name="NOTES_GRANT_TEST")) is None
            assert (allowed / "notes.toml").read_text() == "stateful = true\n"  # never rewritten

            again = error(await call("revoke_permissions", component="notes", env=["NOTES_GRANT_TEST"]))
            assert "it is not granted" in again and "nothing was changed" in again
            outside = error(
                await call(
                    "grant_permissions",
                    component="notes",
                    dirs=[{"host": "..", "guest": "/up", "mode": "read-only"}],
                )
            )
            assert "outside the --allow-load directory" in outside

            url = f"http://127.0.0.1:{upstream}/"
            refused = error(await call("fetch_http_request", method="GET", url=url, body=""))
            assert f"outgoing request to 127.0.0.1:{upstream} refused" in refused
            await call(
                "grant_permissions",
                component="fetch",
                network=[f"127.0.0.1:{upstream}"],
                config={"region": "eu-west-1"},
            )
            assert value(await call("fetch_http_request", method="GET", url=url, body="")) == "200 hello"
            assert value(await call("fetch_config_get", key="region")) == "eu-west-1"
            listed = await call("list_components")
            assert details(listed, "fetch")["network"]["allow"] == [f"127.0.0.1:{upstream}"]
            assert details(listed, "fetch")["config"]["values"] == ["region"]
            assert "eu-west-1" not in json.dumps(listed.structured_content)
            await call("revoke_permissions", component="fetch", network=[f"127.0.0.1:{upstream}"])
            assert "refused" in error(await call("fetch_http_request", method="GET", url=url, body=""))


async def test_permission_tools_need_the_admin_scope(tmp_path: Path, env: dict[str, str]) -> None:
    allowed = tmp_path / "components"
    allowed.mkdir()
    wat = Path(__file__).parent / "wasm_components" / "counter.wat"
    (allowed / "counter.wasm").write_bytes(wasmtime.wat2wasm(wat.read_text()))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{CALLER}\n{ADMIN} statefulmcp:call statefulmcp:admin\n")
    args = (allowed / "counter.wasm", "--auth-token-file", tokens, "--allow-load", allowed)
    with running(*args, tmp=tmp_path, env=env) as server:
        async with http_session(server.url, token=CALLER) as session:
            for tool in ("grant_permissions", "revoke_permissions"):
                refused = await session.call_tool(tool, {"component": "counter", "env": ["HOME"]})
                assert refused.is_error and "forbidden" in text(refused), text(refused)
        async with http_session(server.url, token=ADMIN) as session:
            granted = await session.call_tool("grant_permissions", {"component": "counter", "env": ["HOME"]})
            assert not granted.is_error, text(granted)
            wrong = error(
                await session.call_tool("grant_permissions", {"component": "counter", "env": "HOME"})
            )
            assert "env: expected array" in wrong
