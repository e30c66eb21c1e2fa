"""The fault-injection checker (statefulmcp.checker): each fault, several times, proves nothing is lost.

The slow tests run the real thing: a throwaway PostgreSQL started here, three `statefulmcp serve`
replicas as processes, clients over all of them, and one kind of fault injected three times at
moments a seeded generator picks (the seed is printed: `CHECKER_SEED=<seed>` replays the
timing choices). They assert the verdict only; recovery times are printed, never asserted.

The fast tests feed the verdict made-up histories, so each check is shown to catch what it
claims to catch: a checker that passes everything proves nothing.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from statefulmcp.checker import LocalPostgres, Report, Settings, check
from statefulmcp.checker.history import Call, Kind
from statefulmcp.checker.verdict import AuditRow, judge

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL of this module's own: the pg-restart test restarts it."""
    pg = LocalPostgres(tmp_path_factory.mktemp("checker-pg") / "data")
    try:
        yield pg
    finally:
        pg.close()


async def run_fault(server: LocalPostgres, tmp: Path, fault: str, repeat: int) -> Report:
    seed = int(os.environ.get("CHECKER_SEED") or random.randrange(2**32))
    print(f"fault {fault}: CHECKER_SEED={seed}")
    settings = Settings(fault=fault, repeat=repeat, seed=seed, lease=1.0, serve_args=("--drain-timeout", "5"))
    report = await check(server.url, tmp, settings=settings, server=server)
    print(report.text())
    assert report.verdict.violations == [], report.text()
    assert len(report.verdict.recoveries) >= repeat
    return report


@pytest.mark.slow
async def test_kill_9_of_the_owner_of_busy_keys_loses_no_acknowledged_update(
    server: LocalPostgres, tmp_path: Path
) -> None:
    await run_fault(server, tmp_path, "kill", repeat=3)


@pytest.mark.slow
async def test_a_stopped_owner_past_its_lease_commits_nothing_and_stops_serving_its_keys(
    server: LocalPostgres, tmp_path: Path
) -> None:
    await run_fault(server, tmp_path, "stop", repeat=3)


@pytest.mark.slow
async def test_an_owner_cut_off_from_postgresql_gives_its_keys_up_while_its_clients_still_reach_it(
    server: LocalPostgres, tmp_path: Path
) -> None:
    await run_fault(server, tmp_path, "cut", repeat=3)


@pytest.mark.slow
async def test_postgresql_restarted_under_load_loses_no_acknowledged_update(
    server: LocalPostgres, tmp_path: Path
) -> None:
    await run_fault(server, tmp_path, "pg-restart", repeat=3)


@pytest.mark.slow
async def test_a_rolling_restart_under_load_loses_no_acknowledged_update(
    server: LocalPostgres, tmp_path: Path
) -> None:
    report = await run_fault(server, tmp_path, "rolling", repeat=1)
    assert len(report.verdict.recoveries) == 3  # one per replica


# -- the verdict on made-up histories ---------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


class Calls:
    """A history written by hand: `add(kind, key, arg, sent, done, value)`, `None` value = failed."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def add(self, kind: Kind, key: str, arg: int | str | None, sent: float, done: float, value: Any) -> None:
        call = Call(len(self.calls), kind, key, arg, "r", sent, done)
        if value is None:
            call.error = "the call may or may not have taken effect"
        else:
            call.acknowledged, call.value = True, value
        self.calls.append(call)


CLAIM = [AuditRow(1, "k", "a", 1, at(0))]
COMMIT = [AuditRow(1, "k", "a", 1, at(5))]


def test_a_clean_history_has_no_violations() -> None:
    h = Calls()
    h.add("incr", "k", 1, 1, 2, 1)
    h.add("incr", "k", 1, 3, 4, None)  # in doubt: it landed
    h.add("incr", "k", 1, 5, 6, 3)
    h.add("count", "k", None, 7, 8, 3)
    h.add("put", "r", "x", 1, 2, "x")
    h.add("read", "r", None, 3, 4, "x")
    verdict = judge(h.calls, CLAIM, COMMIT, {"k": 3, "r": "x"})
    assert verdict.violations == []


def test_a_lost_acknowledged_increment_is_a_violation() -> None:
    h = Calls()
    h.add("incr", "k", 1, 1, 2, 1)
    h.add("incr", "k", 1, 3, 4, 2)
    assert any("was lost" in v for v in judge(h.calls, CLAIM, COMMIT, {"k": 1}).violations)


def test_two_calls_acknowledged_with_one_value_are_a_violation() -> None:
    h = Calls()
    h.add("incr", "k", 1, 1, 3, 1)
    h.add("incr", "k", 1, 2, 4, 1)
    assert any("both acknowledged with 1" in v for v in judge(h.calls, CLAIM, COMMIT, {"k": 2}).violations)


def test_a_counter_above_the_increments_sent_is_a_violation() -> None:
    h = Calls()
    h.add("incr", "k", 1, 1, 2, 1)
    assert any("applied twice" in v for v in judge(h.calls, CLAIM, COMMIT, {"k": 2}).violations)


def test_a_counter_that_goes_back_is_a_violation() -> None:
    """An in-doubt increment shown by a read must stay: a later answer below it is a lost update
    (memory that ran ahead of the database, say)."""
    h = Calls()
    h.add("incr", "k", 1, 1, 2, 1)
    h.add("incr", "k", 1, 3, 4, None)
    h.add("count", "k", None, 5, 6, 2)
    h.add("incr", "k", 1, 7, 8, 2)
    assert any("went back" in v for v in judge(h.calls, CLAIM, COMMIT, {"k": 2}).violations)


def test_a_stale_register_read_is_a_violation() -> None:
    h = Calls()
    h.add("put", "r", "x", 1, 2, "x")
    h.add("put", "r", "y", 3, 4, "y")
    h.add("read", "r", None, 5, 6, "x")
    assert any("stale read" in v for v in judge(h.calls, [], [], {"r": "y"}).violations)


def test_a_register_read_of_a_value_never_written_is_a_violation() -> None:
    h = Calls()
    h.add("put", "r", "x", 1, 2, "x")
    assert any("never written" in v for v in judge(h.calls, [], [], {"r": "z"}).violations)


def test_a_commit_after_the_superseding_claim_is_two_owners_committing() -> None:
    claims = [AuditRow(1, "k", "a", 1, at(0)), AuditRow(2, "k", "b", 2, at(10))]
    zombie = [AuditRow(1, "k", "a", 1, at(5)), AuditRow(2, "k", "a", 1, at(15))]
    violations = judge([], claims, zombie, {}).violations
    assert [v for v in violations if "two owners committing" in v] != []


def test_a_commit_under_an_epoch_another_replica_claimed_is_a_violation() -> None:
    claims = [AuditRow(1, "k", "a", 1, at(0)), AuditRow(2, "k", "b", 2, at(10))]
    assert any(
        "claimed by b" in v for v in judge([], claims, [AuditRow(1, "k", "a", 2, at(12))], {}).violations
    )


def test_claim_epochs_that_do_not_grow_are_a_violation() -> None:
    claims = [AuditRow(1, "k", "a", 2, at(0)), AuditRow(2, "k", "b", 2, at(10))]
    assert any("not above" in v for v in judge([], claims, [], {}).violations)
