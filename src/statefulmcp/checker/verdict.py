"""The verdict: what a run proves, from the clients' records and the database's audit tables.

Every check is *sound*: it reports only what cannot happen in a correct system, whatever the
timing, so a violation is a bug and never bad luck. Calls that failed are sent-not-acknowledged:
they may have taken effect or not, and every bound allows both.

Ownership (from `statefulmcp_claims` and `statefulmcp_commits`, per key):

- claim epochs strictly increase in claim order;
- every commit was made under a claimed epoch, by the replica that claimed it, after that claim
  and before the next one: no key ever had two owners committing, and no zombie (an owner whose
  epoch was superseded) committed after the superseding claim.

The order between a claim and a commit is that of their `at` columns (`clock_timestamp()` on
the database server), not of their ids: claims and commits take ids from two different
sequences. `at` orders them because of the locks both statements take on the key's owner row. A
claim updates the row (an exclusive lock) and its claim row is formed after the update; a commit
locks the row `FOR SHARE` only if it still holds this replica and its epoch, and its audit row is
formed after that lock. So a commit that locked first ends (commits) before the claim's update
can proceed: its `at` is earlier. A commit that tried after the claim's update waits for it,
re-reads the row, finds the new epoch and writes nothing, audit row included. And a commit under
epoch e comes after the claim of e, whose result its replica waited for. Within one table, ids of
one key are in commit order too (each statement takes its id after its lock, and the lock holder
finishes before the next), which the checks of epochs in id order rely on.

Counters (`by` summed over the calls; the final value from the database or the count tool):

- acknowledged values of one key are distinct;
- max(acknowledged) <= final, sum(acknowledged) <= final <= sum(sent): no acknowledged increment
  was lost, and none applied more often than it was sent;
- each acknowledged value includes every increment acknowledged before its call was sent, and
  no increment sent after it was answered (so a zombie answering from memory is caught); a count
  read likewise;
- a counter never goes back: no acknowledged call answers less (its own increment left out) than
  a call answered before it was sent. An increment in doubt may or may not have taken effect,
  but once an answer has shown it, it has, and must stay.

Registers (values are unique per write):

- a read (and the final value) returns a value that was written, by a write sent before the read
  was answered, and not one overwritten in real time: no acknowledged write `w2` acknowledged
  before the read was sent was itself sent after the acknowledgement of the write read.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statefulmcp.checker.history import UPDATES, Call, is_expected


@dataclass(frozen=True)
class AuditRow:
    """A row of `statefulmcp_claims` or `statefulmcp_commits` for the component under test."""

    id: int
    key: str
    replica: str
    epoch: int
    at: datetime


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault: what, on whom, when (monotonic), and the keys it moved."""

    kind: str
    victim: str
    instant: float
    keys: frozenset[str]


@dataclass(frozen=True)
class Recovery:
    """From a fault to the first acknowledged update (an increment or a write) of one of its keys
    sent after it: a read may still be answered by a cut-off owner while it trusts its lease, an
    update only by an owner that can commit."""

    fault: FaultEvent
    seconds: float | None


@dataclass
class Verdict:
    """The outcome of one run: `violations` empty means every check passed."""

    violations: list[str] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    calls: int = 0
    acknowledged: int = 0
    failed: int = 0
    claims: int = 0
    commits: int = 0
    keys: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        times = ", ".join(
            f"{r.fault.kind} {r.fault.victim}: "
            + ("not recovered" if r.seconds is None else f"{r.seconds:.2f} s")
            for r in self.recoveries
        )
        return (
            f"{self.calls} calls ({self.acknowledged} acknowledged, {self.failed} failed or in doubt) on "
            f"{self.keys} keys, {self.claims} claims, {self.commits} audited commits; "
            f"{len(self.violations)} violations; recovery: {times or 'no faults'}"
        )


def judge(
    calls: Sequence[Call],
    claims: Sequence[AuditRow],
    commits: Sequence[AuditRow],
    final: dict[str, Any],
    *,
    faults: Iterable[FaultEvent] = (),
) -> Verdict:
    """Check a run. `final`: each key's value once every replica has stopped (from
    `statefulmcp_state`, or the last read of the run when the state names are not known)."""
    verdict = Verdict(
        calls=len(calls),
        acknowledged=sum(c.acknowledged for c in calls),
        failed=sum(not c.acknowledged for c in calls),
        claims=len(claims),
        commits=len(commits),
    )
    out = verdict.violations
    by_key: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        by_key[call.key].append(call)
    verdict.keys = len(by_key)
    out += _ownership(claims, commits)
    for key, of_key in sorted(by_key.items()):
        if key not in final:
            out.append(f"{key}: no final value could be read after the run")
            continue
        if any(c.kind in ("incr", "count") for c in of_key):
            out += _counter(key, of_key, final[key])
        else:
            out += _register(key, of_key, final[key])
    for call in calls:
        if call.error and not call.transport and not is_expected(call.error):
            out.append(
                f"call {call.index} ({call.kind} {call.key} on {call.replica}): unexpected error: {call.error}"
            )
    done = [c for c in calls if c.acknowledged]
    for fault in faults:
        first = [
            c.done
            for c in done
            if c.kind in UPDATES and c.key in fault.keys and c.sent >= fault.instant and c.done is not None
        ]
        verdict.recoveries.append(Recovery(fault, min(first) - fault.instant if first else None))
    return verdict


def _ownership(claims: Sequence[AuditRow], commits: Sequence[AuditRow]) -> list[str]:
    out: list[str] = []
    claims_of: dict[str, list[AuditRow]] = defaultdict(list)
    for claim in sorted(claims, key=lambda r: r.id):
        claims_of[claim.key].append(claim)
    for key, rows in claims_of.items():
        for before, after in itertools.pairwise(rows):
            if after.epoch <= before.epoch:
                out.append(
                    f"{key}: claim {after.id} by {after.replica} has epoch {after.epoch}, not above "
                    f"the epoch {before.epoch} of the claim before it ({before.id} by {before.replica})"
                )
    last_epoch: dict[str, int] = {}
    for commit in sorted(commits, key=lambda r: r.id):
        rows = claims_of.get(commit.key, [])
        at = next((i for i, c in enumerate(rows) if c.epoch == commit.epoch), None)
        what = f"{commit.key}: commit {commit.id} by {commit.replica} under epoch {commit.epoch}"
        if at is None:
            out.append(f"{what}: that epoch was never claimed")
            continue
        claim = rows[at]
        if claim.replica != commit.replica:
            out.append(f"{what}: the epoch was claimed by {claim.replica}")
        if not claim.at < commit.at:
            out.append(f"{what} at {commit.at} is not after its claim ({claim.at})")
        if at + 1 < len(rows) and not commit.at < rows[at + 1].at:
            later = rows[at + 1]
            out.append(
                f"{what} at {commit.at} came after claim {later.id} by {later.replica} of epoch "
                f"{later.epoch} at {later.at}: two owners committing"
            )
        if commit.epoch < last_epoch.get(commit.key, 0):
            out.append(f"{what} follows a commit under epoch {last_epoch[commit.key]}")
        last_epoch[commit.key] = max(commit.epoch, last_epoch.get(commit.key, 0))
    return out


def _by(call: Call) -> int:
    return call.arg if isinstance(call.arg, int) else 1


class _Sums:
    """Sums of `by` over calls ordered by a time: "how much before t", in O(log n)."""

    def __init__(self, points: Iterable[tuple[float, int]]) -> None:
        ordered = sorted(points)
        self.times = [t for t, _ in ordered]
        self.prefix = [0]
        for _, by in ordered:
            self.prefix.append(self.prefix[-1] + by)

    def before(self, t: float) -> int:
        """The sum over points strictly before `t`."""
        return self.prefix[bisect.bisect_left(self.times, t)]


class _Highest:
    """The highest value answered before a time, and by which call, in O(log n)."""

    def __init__(self, points: Iterable[tuple[float | None, int, int]]) -> None:
        ordered = sorted((t, v, i) for t, v, i in points if t is not None)
        self.times = [t for t, _, _ in ordered]
        self.top: list[tuple[int, int]] = []
        for _, value, index in ordered:
            self.top.append(max(self.top[-1], (value, index)) if self.top else (value, index))

    def before(self, t: float) -> tuple[int, int]:
        """(value, call index) of the highest answer strictly before `t`; (0, -1) if none."""
        n = bisect.bisect_left(self.times, t)
        return self.top[n - 1] if n else (0, -1)


def _counter(key: str, calls: list[Call], final: Any) -> list[str]:
    out: list[str] = []
    incrs = [c for c in calls if c.kind == "incr"]
    acked = [c for c in incrs if c.acknowledged]
    sent_total = sum(_by(c) for c in incrs)
    acked_total = sum(_by(c) for c in acked)
    final_n = 0 if final in (None, "") else final
    if not isinstance(final_n, int):
        return [f"{key}: the final counter value {final!r} is not an integer"]
    seen: dict[Any, Call] = {}
    for call in acked:
        if call.value in seen:
            out.append(
                f"{key}: calls {seen[call.value].index} and {call.index} were both acknowledged with "
                f"{call.value!r} (an increment lost, or answered from a stale copy)"
            )
        seen[call.value] = call
    highest = max((c.value for c in acked if isinstance(c.value, int)), default=0)
    if final_n < highest:
        out.append(
            f"{key}: final value {final_n} is below the acknowledged value {highest}: an acknowledged update was lost"
        )
    if final_n < acked_total:
        out.append(
            f"{key}: final value {final_n} is below the {acked_total} acknowledged increments: one was lost"
        )
    if final_n > sent_total:
        out.append(
            f"{key}: final value {final_n} is above the {sent_total} increments sent: one was applied twice"
        )
    sent = _Sums((c.sent, _by(c)) for c in incrs)
    done = _Sums((c.done, _by(c)) for c in acked if c.done is not None)
    seen_by = _Highest(
        (c.done, c.value, c.index) for c in calls if c.acknowledged and isinstance(c.value, int)
    )
    for call in calls:
        if not call.acknowledged or call.done is None:
            continue
        if not isinstance(call.value, int):
            out.append(f"{key}: call {call.index} ({call.kind}) answered {call.value!r}, not an integer")
            continue
        own = _by(call) if call.kind == "incr" else 0
        floor = done.before(call.sent) + own
        ceiling = sent.before(call.done)
        if call.value < floor:
            out.append(
                f"{key}: call {call.index} ({call.kind} on {call.replica}) answered {call.value}, but "
                f"{floor - own} increments were acknowledged before it was sent: a stale answer"
            )
        highest_before, shown_by = seen_by.before(call.sent)
        if call.value - own < highest_before:
            out.append(
                f"{key}: call {call.index} ({call.kind} on {call.replica}) answered {call.value}, but call "
                f"{shown_by} was answered {highest_before} before it was sent: the counter went back (an "
                "answer from memory the database never held, or a lost update)"
            )
        if call.value > ceiling:
            out.append(
                f"{key}: call {call.index} ({call.kind}) answered {call.value}, but only {ceiling} "
                "increments were sent before its answer"
            )
    return out


def _register(key: str, calls: list[Call], final: Any) -> list[str]:
    out: list[str] = []
    puts = {c.arg: c for c in calls if c.kind == "put"}
    acked_puts = sorted(
        (c for c in puts.values() if c.acknowledged and c.done is not None), key=lambda c: c.done or 0.0
    )
    done_times = [c.done or 0.0 for c in acked_puts]
    latest_sent = list(_running_max(c.sent for c in acked_puts))

    def check(what: str, value: Any, sent: float, answered: float) -> None:
        # The acknowledged writes that ended before the read began; the latest of them was sent last.
        n = bisect.bisect_left(done_times, sent)
        if value in (None, ""):
            if n:
                out.append(
                    f"{key}: {what} read nothing, but write {acked_puts[0].arg!r} was acknowledged before it"
                )
            return
        write = puts.get(value)
        if write is None:
            out.append(f"{key}: {what} read {value!r}, which was never written")
            return
        if write.sent > answered:
            out.append(f"{key}: {what} read {value!r}, written only after the read was answered")
        if n and write.acknowledged and write.done is not None and write.done < latest_sent[n - 1]:
            out.append(
                f"{key}: {what} read {value!r} (call {write.index}), overwritten before the read was sent "
                "by a write acknowledged since: a stale read, or a lost acknowledged write"
            )

    for call in calls:
        if call.kind == "read" and call.acknowledged and call.done is not None:
            check(f"read {call.index} on {call.replica}", call.value, call.sent, call.done)
    check("the final value", final, math.inf, math.inf)
    return out


def _running_max(values: Iterable[float]) -> Iterable[float]:
    top = -math.inf
    for value in values:
        top = max(top, value)
        yield top
