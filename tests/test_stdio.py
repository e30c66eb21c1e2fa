"""Over stdio every line gets an answer: bad input gets the JSON-RPC error the spec gives, and
the server keeps serving the next request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import COMPONENTS

_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


class _Raw:
    """A stdio server driven line by line."""

    def __init__(self, tmp: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statefulmcp", "serve", str(COMPONENTS / "probe.py"), "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the server closed stdout"
        message: dict[str, Any] = json.loads(line)
        return message


def test_every_bad_line_gets_the_json_rpc_error_and_serving_goes_on(tmp_path: Path) -> None:
    raw = _Raw(tmp_path)
    try:
        raw.send(json.dumps(_INIT))
        assert raw.reply()["id"] == 1
        raw.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        cases = [
            ("this is not json", -32700, None),
            (json.dumps([{"jsonrpc": "2.0", "id": 2, "method": "ping"}]), -32600, None),
            (json.dumps({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}), -32600, None),
            (
                '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "probe_echo", '
                '"arguments": {"x": ' + "[" * 10_000 + "]" * 10_000 + "}}}",
                -32600,
                7,
            ),
        ]
        for line, code, request_id in cases:
            raw.send(line)
            answer = raw.reply()
            assert answer["error"]["code"] == code, (line[:40], answer)
            assert answer["id"] == request_id
        raw.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        assert raw.reply() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    finally:
        raw.proc.kill()
        raw.proc.wait()
