"""The record of every call the clients made: what was sent, when, to which replica, and what came back.

The verdict trusts nothing else from the clients. A call is *acknowledged* only if it returned a
result that is not an error; every other outcome (an error that says to retry, one that says the
call may or may not have taken effect, a broken connection, a time-out) counts as sent and not
acknowledged: it may have taken effect, or not, and the checks allow both. Times are this
process's monotonic clock, so "acknowledged before that call was sent" is a real-time order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["incr", "count", "put", "read"]

UPDATES: frozenset[Kind] = frozenset({"incr", "put"})

EXPECTED_ERRORS = ("retry", "may or may not")
"""Words of the errors a caller must expect during a fault (see docs/scaling.md); an error that has
none of them is reported as unexpected."""


def is_expected(error: str) -> bool:
    text = error.lower()
    return any(word in text for word in EXPECTED_ERRORS)


@dataclass(slots=True)
class Call:
    """One call as a client saw it. `done` is when its answer (or failure) came back."""

    index: int
    kind: Kind
    key: str
    arg: int | str | None
    replica: str
    sent: float
    done: float | None = None
    acknowledged: bool = False
    value: Any = None
    error: str = ""
    transport: bool = False
    """The failure was the client's (connection refused or broken, time-out), not a tool error."""


@dataclass
class History:
    """Every call in the order it was sent; appended to by the clients, read by faults and verdict."""

    calls: list[Call] = field(default_factory=list)
    acknowledged: int = 0

    def send(self, kind: Kind, key: str, arg: int | str | None, replica: str) -> Call:
        call = Call(len(self.calls), kind, key, arg, replica, time.monotonic())
        self.calls.append(call)
        return call

    def ack(self, call: Call, value: Any) -> None:
        call.done = time.monotonic()
        call.acknowledged = True
        call.value = value
        self.acknowledged += 1

    def fail(self, call: Call, error: str, *, transport: bool) -> None:
        call.done = time.monotonic()
        call.error = error
        call.transport = transport

    def first_ack(self, keys: set[str], since: float) -> Call | None:
        """The earliest acknowledged update of one of `keys` sent at or after `since`."""
        found = [
            c
            for c in self.calls
            if c.acknowledged and c.kind in UPDATES and c.key in keys and c.sent >= since
        ]
        return min(found, key=lambda c: c.done or 0.0, default=None)

    def unexpected(self) -> list[Call]:
        """Tool errors that do not tell the caller to retry: none is expected, fault or not."""
        return [c for c in self.calls if c.error and not c.transport and not is_expected(c.error)]
