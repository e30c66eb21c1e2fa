"""JavaScript components built with componentize-js in the test run, served by a real server.

componentize-js is installed from the npm registry with `npm ci` at the versions
`wasm_components/js/package-lock.json` pins, once per test run, and each component is built once
(`wasm_components/build.py`). Every default componentize-js build imports `wasi:http` (for
`fetch()`), used or not; these tests show that such a build loads and is served, stateful and
stateless, that its `fetch()` reaches a granted host and nothing else, and that it reads
`wasi:config/store` from its policy.
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
from conftest import error, http_session, local_http, running, text, value
from wasm_components.build import componentize_js, js_component

from statefulmcp.wasm import cache
from statefulmcp.wasm import engine as engines

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="session")
def componentize_js_cli() -> Path:
    return componentize_js()


def compiled(built: Path) -> Path:
    """`built`, compiled once into the run's compile cache.

    Compiling a 12 MB componentize-js build takes seconds (more on a loaded machine), and a server
    compiles before it listens; with the cache filled here, the servers only read it.
    """
    cache.compile_component(built.read_bytes(), fuel=False)
    return built


@pytest.fixture(scope="session")
def js_notes(componentize_js_cli: Path) -> Path:
    return compiled(js_component("notes", componentize_js_cli))


@pytest.fixture(scope="session")
def js_fetch(componentize_js_cli: Path) -> Path:
    return compiled(js_component("fetch", componentize_js_cli))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "STATEFULMCP_CACHE_DIR": os.environ.get("STATEFULMCP_CACHE_DIR", str(tmp_path / "cache")),
        "JS_TEST_API_KEY": "from-env",
    }


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recording

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = f"path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Recording(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Upstream)
        self.paths: list[str] = []


@pytest.fixture
def upstream() -> Iterator[_Recording]:
    with local_http(_Recording()) as server:
        yield server


def imports(built: Path) -> list[str]:
    component = cache.compile_component(built.read_bytes(), fuel=False)
    return list(component.type.imports(engines.engine(False)))


async def test_a_default_js_build_imports_wasi_http_and_is_served_stateful_and_stateless(
    js_notes: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    names = imports(js_notes)
    assert any(name.startswith("wasi:http/types@") for name in names), names
    directory = tmp_path / "components"
    directory.mkdir()
    shutil.copy(js_notes, directory / "notes.wasm")
    (directory / "notes.toml").write_text("stateful = true\n")
    shutil.copy(js_notes, directory / "fresh.wasm")
    with running(directory / "notes.wasm", directory / "fresh.wasm", tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert {f"notes_{name}" for name in ("add_note", "list_notes", "stats", "find", "shout")} <= set(
                tools
            )
            assert tools["notes_add_note"].input_schema["properties"] == {"text": {"type": "string"}}
            assert tools["notes_stats"].output_schema is not None
            assert tools["notes_shout"].description == (
                "`shout`, exported by the WebAssembly component notes.wasm."
            ), "componentize-js leaves the WIT doc comments out"

            assert value(await session.call_tool("notes_add_note", {"text": "one"})) == 1
            assert value(await session.call_tool("notes_add_note", {"text": "three"})) == 2
            assert value(await session.call_tool("notes_list_notes", {})) == ["one", "three"]
            assert value(await session.call_tool("notes_stats", {})) == {"count": 2, "longest": "three"}
            assert value(await session.call_tool("notes_find", {"prefix": "th"})) == "three"
            missing = await session.call_tool("notes_find", {"prefix": "x"})
            assert error(missing) == 'no note starts with "x"'
            assert missing.structured_content == {"error": 'no note starts with "x"'}
            assert value(await session.call_tool("notes_list_notes", {})) == ["one", "three"], (
                "an err is an answer, not a trap: the instance keeps its state"
            )

            for _ in range(2):
                assert value(await session.call_tool("fresh_add_note", {"text": "one"})) == 1
            assert value(await session.call_tool("fresh_list_notes", {})) == []
            assert value(await session.call_tool("fresh_stats", {})) == {"count": 0, "longest": None}
            assert value(await session.call_tool("fresh_shout", {"text": "hé"})) == "HÉ!"

            listed = json.loads(text(await session.call_tool("list_components", {})))
            assert {c["name"]: c["details"]["network"] for c in listed} == {
                "notes": "denied",
                "fresh": "denied",
            }
        assert server.proc.poll() is None


FETCH_POLICY = """
[network]
allow = ["127.0.0.1:{port}"]

[config]
region = "eu-west-1"

[config.env]
api_key = "JS_TEST_API_KEY"
"""


async def test_fetch_reaches_a_granted_host_and_is_refused_elsewhere_naming_the_host(
    js_fetch: Path, tmp_path: Path, env: dict[str, str], upstream: _Recording
) -> None:
    port = upstream.server_address[1]
    directory = tmp_path / "components"
    directory.mkdir()
    shutil.copy(js_fetch, directory / "granted.wasm")
    (directory / "granted.toml").write_text(FETCH_POLICY.format(port=port))
    shutil.copy(js_fetch, directory / "denied.wasm")
    with running(directory / "granted.wasm", directory / "denied.wasm", tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            here = f"http://127.0.0.1:{port}"
            answer = value(await session.call_tool("granted_http_get", {"url": f"{here}/hello?x=1"}))
            assert answer == "200 path=/hello?x=1"

            other = f"127.0.0.1:{port + 1}"
            refused = error(await session.call_tool("granted_http_get", {"url": f"http://{other}/"}))
            assert f"outgoing request to {other} refused" in refused, refused
            assert f'add "{other}" to `allow`' in refused, refused

            refused = error(await session.call_tool("denied_http_get", {"url": f"{here}/secret"}))
            assert f"outgoing request to 127.0.0.1:{port} refused" in refused, refused
            assert "has no [network] grants" in refused, refused

            assert value(await session.call_tool("granted_http_status", {"url": f"{here}/two"})) == 200
            trapped = error(await session.call_tool("granted_http_status", {"url": f"http://{other}/"}))
            assert "aborted" in trapped and f"outgoing request to {other} refused" in trapped, trapped
        assert upstream.paths == ["/hello?x=1", "/two"], "refused requests never left the server"
        assert f"outgoing request to 127.0.0.1:{port} refused" in server.log()


async def test_a_js_component_reads_wasi_config_from_its_policy(
    js_fetch: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    directory = tmp_path / "components"
    directory.mkdir()
    shutil.copy(js_fetch, directory / "granted.wasm")
    (directory / "granted.toml").write_text(FETCH_POLICY.format(port=1))
    shutil.copy(js_fetch, directory / "denied.wasm")
    with running(directory / "granted.wasm", directory / "denied.wasm", tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("granted_config_get", {"key": "region"})) == "eu-west-1"
            assert value(await session.call_tool("granted_config_get", {"key": "api_key"})) == "from-env"
            assert value(await session.call_tool("granted_config_get", {"key": "missing"})) is None
            every = value(await session.call_tool("granted_config_all", {}))
            assert sorted(map(tuple, every)) == [("api_key", "from-env"), ("region", "eu-west-1")]
            assert value(await session.call_tool("denied_config_get", {"key": "region"})) is None
            assert value(await session.call_tool("denied_config_all", {})) == []
            listed = text(await session.call_tool("list_components", {}))
            assert "api_key" in listed and "from-env" not in listed and "eu-west-1" not in listed
