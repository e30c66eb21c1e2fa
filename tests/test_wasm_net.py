"""wasi:http and wasi:config/store, through a component built with componentize-py in the test run.

Requests go to an HTTP server this test starts on 127.0.0.1: the granted host answers, every
other one is refused with an error naming it, and a name that resolves to this machine is
refused even when granted (DNS rebinding). Config values come from the policy, the environment
and an owner-only secrets file, and never show in the listing.
"""

from __future__ import annotations

import http.server
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import local_http
from wasm_components.build import fetch_component

from statefulmcp.components import ComponentError, ComponentSpec
from statefulmcp.wasm import http as wasi_http
from statefulmcp.wasm import load_wasm
from statefulmcp.wasm.network import HostGrant

pytestmark = pytest.mark.slow


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/big"):
            self._answer(b"x" * 5000)
        elif self.path.startswith("/slow"):
            time.sleep(3)
            self._answer(b"late")
        else:
            self._answer(f"path={self.path} host={self.headers['Host']}".encode())

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(f"got {len(data)} bytes".encode())


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with local_http(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)) as server:
        yield server.server_address[1]


@pytest.fixture(scope="module")
def fetch_wasm() -> Path:
    return fetch_component()


def install(directory: Path, built: Path, policy: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "fetch.wasm"
    link.symlink_to(built)
    if policy is not None:
        (directory / "fetch.toml").write_text(policy)
    return link


def send(spec: ComponentSpec, method: str, url: str, body: str = "") -> tuple[bool, str]:
    t = next(t for t in spec.tools if t.name == "http_request")
    result = t.to_result(
        t.call(spec.new_instance(), t.validate({"method": method, "url": url, "body": body}))
    )
    content = result.structured_content
    assert isinstance(content, dict)
    return (False, content["error"]) if result.is_error else (True, content["result"])


def config(spec: ComponentSpec, tool: str, **arguments: Any) -> Any:
    t = next(t for t in spec.tools if t.name == tool)
    result = t.to_result(t.call(spec.new_instance(), t.validate(arguments)))
    assert result.structured_content is not None
    return result.structured_content["result"]


def test_host_patterns_match_names_ports_and_wildcards() -> None:
    exact, wild, anyport, address = (
        HostGrant.parse(p) for p in ("API.example.com", "*.example.org:8443", "example.net:*", "[::1]:8080")
    )
    assert exact.matches("api.example.com", 443) and exact.matches("api.example.com", 80)
    assert not exact.matches("api.example.com", 8080) and not exact.matches("x.api.example.com", 443)
    assert wild.matches("a.b.example.org", 8443) and not wild.matches("example.org", 8443)
    assert not wild.matches("a.example.org", 443) and not wild.matches("evilexample.org", 8443)
    assert anyport.matches("example.net", 1) and anyport.matches("example.net", 65535)
    assert address.matches("::1", 8080) and address.is_address
    assert HostGrant.parse("::1").ports == (80, 443)  # a bare IPv6 address: the default ports
    for bad in ("", "http://x", "user@host", "a.*.com", "*.", "*.1.2.3.4", "host:0", "host:99999", "::1:x:"):
        with pytest.raises(ValueError):
            HostGrant.parse(bad)


def test_the_granted_host_answers_and_others_are_refused(
    fetch_wasm: Path, upstream: int, tmp_path: Path
) -> None:
    spec = load_wasm(install(tmp_path, fetch_wasm, f'[network]\nallow = ["127.0.0.1:{upstream}"]\n'))
    assert spec.permissions is not None
    assert spec.permissions.describe()["network"]["allow"] == [f"127.0.0.1:{upstream}"]
    ok, answer = send(spec, "GET", f"http://127.0.0.1:{upstream}/hello?x=1")
    assert ok and answer == f"200 path=/hello?x=1 host=127.0.0.1:{upstream}", answer
    assert send(spec, "POST", f"http://127.0.0.1:{upstream}/up", "y" * 10_000) == (
        True,
        "200 got 10000 bytes",
    )
    for url, host in [
        (f"http://127.0.0.1:{upstream + 1}/", f"127.0.0.1:{upstream + 1}"),
        ("http://example.com/", "example.com:80"),
        (f"http://[::1]:{upstream}/", f"::1:{upstream}"),
    ]:
        ok, why = send(spec, "GET", url)
        assert not ok and f"outgoing request to {host} refused" in why and "add " in why, why
    # https goes to the same grant with TLS to the granted name; this server speaks plain HTTP.
    _, answer = send(spec, "GET", f"https://127.0.0.1:{upstream}/")
    assert answer.startswith("502 ") and "SSLError" in answer, answer


def test_a_component_that_imports_wasi_http_loads_and_is_denied_by_default(
    fetch_wasm: Path, upstream: int, tmp_path: Path
) -> None:
    spec = load_wasm(install(tmp_path, fetch_wasm))
    assert spec.permissions is not None and spec.permissions.describe()["network"] == "denied"
    ok, why = send(spec, "GET", f"http://127.0.0.1:{upstream}/")
    assert not ok and "has no [network] grants" in why and f'"127.0.0.1:{upstream}"' in why, why


def test_a_granted_name_that_resolves_to_this_machine_is_refused(
    fetch_wasm: Path, upstream: int, tmp_path: Path
) -> None:
    spec = load_wasm(install(tmp_path, fetch_wasm, f'[network]\nallow = ["localhost:{upstream}"]\n'))
    ok, why = send(spec, "GET", f"http://localhost:{upstream}/")
    assert not ok and "resolves to 127.0.0.1, which is not a public address" in why, why
    assert f'grant "127.0.0.1:{upstream}" itself' in why


def test_requests_are_bounded_in_size_and_time(fetch_wasm: Path, upstream: int, tmp_path: Path) -> None:
    policy = (
        f'[network]\nallow = ["127.0.0.1:{upstream}"]\ntimeout_seconds = 1\n'
        "max_request_bytes = 1000\nmax_response_bytes = 1000\n"
    )
    spec = load_wasm(install(tmp_path, fetch_wasm, policy))
    _, answer = send(spec, "GET", f"http://127.0.0.1:{upstream}/big")
    assert answer.startswith("502 ") and "larger than max_response_bytes (1000)" in answer, answer
    _, answer = send(spec, "GET", f"http://127.0.0.1:{upstream}/slow")
    assert answer.startswith("504 ") and "timeout_seconds (1)" in answer, answer  # /slow takes 3 s
    _, answer = send(spec, "POST", f"http://127.0.0.1:{upstream}/up", "y" * 2000)
    assert answer.startswith("413 ") and "max_request_bytes (1000)" in answer, answer


def test_wasi_http_is_not_linked_when_the_hosts_handle_would_not_be_the_one_guests_get(
    fetch_wasm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wasi_http, "_HANDLER", "wasi:http/outgoing-handler@0.2.3")
    with pytest.raises(ComponentError, match="not loaded rather than given unchecked network"):
        load_wasm(install(tmp_path, fetch_wasm))


CONFIG = """
[config]
region = "eu-west-1"
secrets = "fetch.secrets.toml"

[config.env]
api_key = "FETCH_TEST_API_KEY"
"""


def test_config_values_come_from_the_policy_the_environment_and_a_secrets_file(
    fetch_wasm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "fetch.secrets.toml"
    secrets.write_text('token = "s3cret"\n')
    secrets.chmod(0o600)
    monkeypatch.setenv("FETCH_TEST_API_KEY", "from-env")
    spec = load_wasm(install(tmp_path, fetch_wasm, CONFIG))
    assert config(spec, "config_get", key="region") == "eu-west-1"
    assert config(spec, "config_get", key="api_key") == "from-env"
    assert config(spec, "config_get", key="token") == "s3cret"
    assert config(spec, "config_get", key="missing") is None
    assert sorted(map(tuple, config(spec, "config_all"))) == [
        ("api_key", "from-env"),
        ("region", "eu-west-1"),
        ("token", "s3cret"),
    ]
    assert spec.permissions is not None
    shown = repr(spec.permissions.describe())
    assert "api_key" in shown and "token" in shown
    assert "s3cret" not in shown and "from-env" not in shown and "eu-west-1" not in shown
    monkeypatch.delenv("FETCH_TEST_API_KEY")
    assert config(spec, "config_get", key="api_key") is None


def test_a_secrets_file_others_may_read_is_refused(fetch_wasm: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "fetch.secrets.toml"
    secrets.write_text('token = "s3cret"\n')
    secrets.chmod(0o644)
    with pytest.raises(ComponentError, match=r"may be read or written by others \(mode 644\).*chmod 600"):
        load_wasm(install(tmp_path, fetch_wasm, CONFIG))


def test_config_keys_must_be_strings_and_set_once(fetch_wasm: Path, tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"config\.port: values are strings"):
        load_wasm(install(tmp_path / "a", fetch_wasm, "[config]\nport = 80\n"))
    with pytest.raises(ComponentError, match="config key 'k' is set twice"):
        load_wasm(install(tmp_path / "b", fetch_wasm, '[config]\nk = "v"\n[config.env]\nk = "HOME"\n'))


def test_network_policy_errors_name_the_key(fetch_wasm: Path, tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"network\.allow: 'a\.\*\.com'"):
        load_wasm(install(tmp_path / "a", fetch_wasm, '[network]\nallow = ["a.*.com"]\n'))
    with pytest.raises(ComponentError, match=r"network\.timeout_seconds: must be positive"):
        load_wasm(install(tmp_path / "b", fetch_wasm, "[network]\ntimeout_seconds = 0\n"))
    assert os.environ.get("FETCH_TEST_API_KEY") is None
