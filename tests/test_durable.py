"""Durable state through real server processes: kill -9, restarts, shutdown, faults."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import anyio
import httpx2 as httpx
import pytest
from conftest import COMPONENTS, EXAMPLES, error, http_session, running, start_server, value

pytestmark = pytest.mark.anyio

LEDGER = COMPONENTS / "ledger.py"


def state_arg(tmp_path: Path) -> list[str]:
    return ["--state", f"sqlite:///{tmp_path / 'state.db'}"]


async def balances(url: str, accounts: list[str]) -> dict[str, int]:
    async with http_session(url) as session:
        return {a: value(await session.call_tool("ledger_balance_of", {"account": a})) for a in accounts}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_kill_9_keeps_every_acknowledged_increment(tmp_path: Path, seed: int) -> None:
    """SIGKILL lands right after the `kill_after`-th acknowledgement, with 16 deposits in flight.

    The kill point is a count of acknowledgements (varied by seed), never a guessed time, so every
    run kills mid-load however fast or slow the machine is.
    """
    kill_after = random.Random(seed).randint(60, 600)
    accounts = [f"acct-{i}" for i in range(24)]
    sent = dict.fromkeys(accounts, 0)
    acked = dict.fromkeys(accounts, 0)
    enough = anyio.Event()
    server = start_server(LEDGER, *state_arg(tmp_path), tmp=tmp_path)
    try:
        async with http_session(server.url) as session:

            async def worker(n: int) -> None:
                local = random.Random(seed * 1000 + n)
                while True:
                    account = local.choice(accounts)
                    sent[account] += 1
                    result = await session.call_tool("ledger_deposit", {"account": account, "amount": 1})
                    if result.is_error:
                        return
                    acked[account] += 1
                    if sum(acked.values()) >= kill_after:
                        enough.set()

            async with anyio.create_task_group() as tg:
                for n in range(16):
                    tg.start_soon(worker, n)
                with anyio.fail_after(60):
                    await enough.wait()
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait(10)
                tg.cancel_scope.cancel()
    except BaseException as exc:  # the session dies with the server; that is the point
        if not _is_disconnect(exc):
            raise
    finally:
        server.stop(signal.SIGKILL)
    assert sum(acked.values()) >= kill_after
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path) as again:
        after = await balances(again.url, accounts)
    for account in accounts:
        assert acked[account] <= after[account] <= sent[account], (account, acked[account], after[account])


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_disconnect(e) for e in exc.exceptions)
    return not isinstance(exc, AssertionError)


async def test_a_turn_that_raises_after_writing_commits_nothing(tmp_path: Path) -> None:
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("ledger_deposit", {"account": "a", "amount": 10})) == 10
            failed = error(await session.call_tool("ledger_deposit_then_fail", {"account": "a", "amount": 5}))
            assert "failed after writing" in failed
            bad = error(await session.call_tool("ledger_store_bad_value", {"account": "a"}))
            assert "self.state['when']" in bad and "not JSON" in bad
            assert value(await session.call_tool("ledger_deposit", {"account": "a", "amount": 1})) == 11
        server.stop(signal.SIGKILL)
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path) as server:
        assert await balances(server.url, ["a"]) == {"a": 11}
    rows = sqlite3.connect(tmp_path / "state.db").execute("SELECT name FROM state WHERE key = 'a'").fetchall()
    assert {name for (name,) in rows} == {"balance", "deactivated"}


async def test_sigterm_drains_in_flight_calls_runs_on_deactivate_and_exits_0(tmp_path: Path) -> None:
    """The three deposits stay in flight (held on a gate file) until the drain was seen refusing work."""
    gate = tmp_path / "gate"
    server = start_server(LEDGER, *state_arg(tmp_path), tmp=tmp_path)
    try:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("ledger_deposit", {"account": "b", "amount": 1})) == 1
            results: list[int] = []

            async def in_flight(account: str) -> None:
                arguments = {"account": account, "amount": 7, "gate": str(gate)}
                results.append(value(await session.call_tool("ledger_gated_deposit", arguments)))

            async with anyio.create_task_group() as tg:
                for account in ("s1", "s2", "s3"):
                    tg.start_soon(in_flight, account)
                with anyio.fail_after(20):  # all three are in flight before the signal
                    while value(await session.call_tool("probe_started", {})) < 3:
                        await anyio.sleep(0.02)
                server.proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(20):
                    while httpx.get(f"{server.base}/ready").status_code != 503:
                        await anyio.sleep(0.02)
                refused = error(await session.call_tool("ledger_deposit", {"account": "c", "amount": 1}))
                assert "shutting down" in refused
                assert results == []  # still in flight: the drain waits for them
                gate.touch()
            assert results == [7, 7, 7]  # every in-flight call completed and was acknowledged
        assert server.proc.wait(20) == 0
    finally:
        server.stop(signal.SIGKILL)
    assert "stopped cleanly" in server.log()
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path) as again:
        async with http_session(again.url) as session:
            for account in ("s1", "s2", "s3"):
                assert value(await session.call_tool("ledger_balance_of", {"account": account})) == 7
            assert value(await session.call_tool("ledger_was_deactivated", {"account": "s1"})) is True
            assert value(await session.call_tool("ledger_was_deactivated", {"account": "b"})) is True


async def test_eager_activation_resumes_state_before_ready(tmp_path: Path) -> None:
    """Start-up activates the stored keys before /ready says 200; activation is held on a gate file."""
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            for sensor in ("s1", "s2"):
                await session.call_tool("sensor_record", {"sensor": sensor, "value": 1.5})
    gate = tmp_path / "gate"
    server = start_server(LEDGER, *state_arg(tmp_path), tmp=tmp_path, env={"SENSOR_GATE": str(gate)})
    try:
        assert httpx.get(f"{server.base}/ready").status_code == 503  # on_activate is held
        assert httpx.get(f"{server.base}/health").status_code == 200
        gate.touch()
        with anyio.fail_after(20):
            while httpx.get(f"{server.base}/ready").status_code != 200:
                await anyio.sleep(0.02)
        async with http_session(server.url) as session:
            listed = value(await session.call_tool("list_components", {}))["components"]
            assert {c["name"]: c["instances"] for c in listed}["sensor"] == 2  # before any call
            assert value(await session.call_tool("sensor_activations", {"sensor": "s1"})) == 2
            assert value(await session.call_tool("sensor_record", {"sensor": "s1", "value": 2.0})) == 2
    finally:
        server.stop()


async def test_unload_keeps_durable_state_unless_purged_and_handles_survive_restart(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(LEDGER, allowed / "ledger.py")
    shutil.copy(EXAMPLES / "notes.py", allowed / "notes.py")
    args: list[str | Path] = ["--allow-load", allowed, *state_arg(tmp_path)]
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "ledger.py"})
            await session.call_tool("load_component", {"path": "notes.py"})
            await session.call_tool("ledger_deposit", {"account": "a", "amount": 4})
            handle = value(await session.call_tool("notes_open", {}))
            await session.call_tool("notes_add", {"session": handle, "text": "remember me"})
            await session.call_tool("unload_component", {"name": "ledger"})
            await session.call_tool("load_component", {"path": "ledger.py"})
            assert value(await session.call_tool("ledger_balance_of", {"account": "a"})) == 4  # resumed
            await session.call_tool("unload_component", {"name": "ledger", "purge": True})
            await session.call_tool("load_component", {"path": "ledger.py"})
            assert value(await session.call_tool("ledger_balance_of", {"account": "a"})) == 0  # purged
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "notes.py"})
            assert value(await session.call_tool("notes_list", {"session": handle})) == ["remember me"]
            assert value(await session.call_tool("notes_close", {"session": handle})) is True
            assert "unknown or closed handle" in error(
                await session.call_tool("notes_list", {"session": handle})
            )


def _start_fails(tmp_path: Path, *args: str | Path) -> str:
    server = start_server(LEDGER, *args, tmp=tmp_path, wait=False)
    try:
        code = server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.stop(signal.SIGKILL)
        raise AssertionError(f"the server hung instead of refusing to start:\n{server.log()}") from None
    assert code != 0
    return server.log()


def test_a_corrupt_state_file_stops_start_up_and_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    garbage = b"this is not a database" * 100
    db.write_bytes(garbage)
    log = _start_fails(tmp_path, "--state", str(db))
    assert str(db) in log and "corrupt or not a SQLite database" in log
    assert db.read_bytes() == garbage


def test_a_state_file_in_use_by_another_live_server_is_refused(tmp_path: Path) -> None:
    with running(LEDGER, *state_arg(tmp_path), tmp=tmp_path):
        log = _start_fails(tmp_path, *state_arg(tmp_path))
    assert "in use by another live statefulmcp process" in log and str(tmp_path / "state.db") in log


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_a_read_only_state_path_is_refused(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    if not _mount("--bind", "-o", "ro", str(source), str(target)):
        pytest.skip("this machine cannot bind-mount (needs root)")
    try:
        log = _start_fails(tmp_path, "--state", str(target / "state.db"))
        assert str(target / "state.db") in log and ("read-only" in log or "cannot create" in log)
    finally:
        subprocess.run(["umount", str(target)], check=True)


async def test_a_full_disk_fails_the_turn_and_commits_work_again_once_space_is_back(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)):
        pytest.skip("this machine cannot mount a tmpfs (needs root)")
    try:
        with running(LEDGER, "--state", str(disk / "state.db"), tmp=tmp_path) as server:
            async with http_session(server.url) as session:
                assert value(await session.call_tool("ledger_deposit", {"account": "a", "amount": 1})) == 1
                filler = disk / "filler"
                with filler.open("wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass
                full = error(await session.call_tool("ledger_store_blob", {"account": "a", "size": 400_000}))
                assert "could not commit state" in full and "full" in full
                filler.unlink()
                assert value(await session.call_tool("ledger_deposit", {"account": "a", "amount": 1})) == 2
                assert (
                    value(await session.call_tool("ledger_store_blob", {"account": "a", "size": 1000}))
                    == 1000
                )
            server.stop(signal.SIGKILL)
        with running(LEDGER, "--state", str(disk / "state.db"), tmp=tmp_path) as server:
            assert await balances(server.url, ["a"]) == {"a": 2}
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], check=False)


def test_a_state_path_that_cannot_be_opened_stops_start_up_with_its_name(tmp_path: Path) -> None:
    not_a_file = tmp_path / "state.db"
    not_a_file.mkdir()
    log = _start_fails(tmp_path, "--state", str(not_a_file))
    assert str(not_a_file) in log and "cannot be opened" in log
