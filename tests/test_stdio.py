"""Over stdio every line gets an answer: bad input gets the JSON-RPC error the spec gives, and
the server keeps serving the next request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import COMPONENTS, INITIALIZE

from statefulmcp.transport.lifespan import EXIT_FORCED
from statefulmcp.transport.stdio import MAX_LINE_BYTES


class _Raw:
    """A stdio server driven line by line."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statefulmcp", "serve", *args, "--stdio"],
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

    def initialize(self) -> None:
        self.send(json.dumps(INITIALIZE))
        assert self.reply()["id"] == 1
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def call(self, request_id: int, name: str, arguments: dict[str, Any]) -> None:
        params = {"name": name, "arguments": arguments}
        self.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}))


def test_every_bad_line_gets_the_json_rpc_error_and_serving_goes_on(tmp_path: Path) -> None:
    raw = _Raw(tmp_path, str(COMPONENTS / "probe.py"))
    try:
        raw.initialize()
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


def test_a_line_over_the_limit_gets_invalid_request_and_serving_goes_on(tmp_path: Path) -> None:
    raw = _Raw(tmp_path, str(COMPONENTS / "probe.py"))
    try:
        raw.initialize()
        raw.send(
            '{"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": "' + "a" * MAX_LINE_BYTES + '"}}'
        )
        answer = raw.reply()
        assert answer["error"]["code"] == -32600 and answer["id"] is None, answer
        raw.send(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        assert raw.reply() == {"jsonrpc": "2.0", "id": 4, "result": {}}
    finally:
        raw.proc.kill()
        raw.proc.wait()


def test_sigterm_answers_a_waiting_call_shutting_down_and_exits_while_stdin_stays_open(
    tmp_path: Path,
) -> None:
    raw = _Raw(tmp_path, str(COMPONENTS / "life_slow.py"), "--drain-timeout", "1")
    try:
        raw.initialize()
        raw.call(2, "slow_wait_forever", {"who": "a"})
        raw.call(3, "slow_waiting", {"who": "a"})
        assert raw.reply()["id"] == 3  # the turn after the parked wait ran: the wait is parked
        raw.proc.send_signal(signal.SIGTERM)
        answer = raw.reply()
        assert answer["id"] == 2 and answer["result"]["isError"], answer
        assert "shutting down" in answer["result"]["content"][0]["text"]
        assert raw.proc.wait(20) in (0, EXIT_FORCED)
    finally:
        raw.proc.kill()
        raw.proc.wait()
