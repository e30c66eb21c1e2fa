"""The system under test as the faults see it: the replicas, the database, the proxy and the load.

Faults act on the rig and wait on it: every wait is for a condition (a replica owns busy keys,
so many more calls were acknowledged, a moved key answered again), checked every few
milliseconds and bounded in time, so a slow machine makes a run slower, never wrong. Reads of
the database run on a thread, so the clients' loop never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from statefulmcp.checker.database import RunDatabase
from statefulmcp.checker.history import History
from statefulmcp.checker.load import Load
from statefulmcp.checker.proxy import Proxy
from statefulmcp.checker.replicas import Replica, start_replica
from statefulmcp.checker.target import Target
from statefulmcp.checker.verdict import FaultEvent

POLL = 0.02

log = logging.getLogger("statefulmcp.checker")


class Restartable(Protocol):
    """A PostgreSQL server the checker may restart (`LocalPostgres`, `RestartCommand`)."""

    def restart(self) -> None: ...


class NotReached(RuntimeError):
    """A condition a run waits for did not hold in time: the run cannot go on (not a verdict)."""


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Wait until `condition()` holds; raise `NotReached` naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            held = condition()
            if not isinstance(held, bool):
                held = await held
        except psycopg.OperationalError:  # the database restarting: not yet
            held = False
        if held:
            return
        if time.monotonic() > deadline:
            raise NotReached(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(POLL)


@dataclass
class Rig:
    """What a run is made of; `replicas` are the processes alive (a stopped one included)."""

    target: Target
    db: RunDatabase
    lease: float
    directory: Path
    history: History
    extra_args: tuple[str, ...] = ()
    server: Restartable | None = None
    proxy: Proxy | None = None
    replicas: list[Replica] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    load: Load | None = None
    started: int = 0

    @property
    def patience(self) -> float:
        """How long a fault waits for the cluster to react: generous, many leases."""
        return 30.0 + 10 * self.lease

    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    async def start_replica(self, *, via_proxy: bool = False) -> Replica:
        name = f"r{self.started}"
        self.started += 1
        state = self.db.url
        if via_proxy:
            assert self.proxy is not None
            from statefulmcp.checker.database import url_with

            state = url_with(self.db.url, host="127.0.0.1", port=self.proxy.port)
        replica = await asyncio.to_thread(
            start_replica,
            name,
            self.target.component,
            state,
            lease=self.lease,
            directory=self.directory,
            extra=self.extra_args,
        )
        self.replicas.append(replica)
        return replica

    def remove(self, replica: Replica) -> None:
        self.replicas = [r for r in self.replicas if r is not replica]

    async def owned(self, replica: Replica, keys: list[str]) -> set[str]:
        """Which of `keys` `replica` owns now, by `statefulmcp_owners`."""
        rows = await asyncio.to_thread(
            self.db.rows,
            "SELECT key FROM statefulmcp_owners WHERE component = %s AND replica = %s AND key = ANY(%s)",
            self.target.name,
            replica.id,
            keys,
        )
        return {k for (k,) in rows}

    async def claimed_elsewhere(self, keys: set[str], replica: Replica) -> bool:
        """Whether another replica owns one of `keys` now (it was claimed away from `replica`)."""
        rows = await asyncio.to_thread(
            self.db.rows,
            "SELECT 1 FROM statefulmcp_owners WHERE component = %s AND key = ANY(%s) "
            "AND replica IS NOT NULL AND replica <> %s LIMIT 1",
            self.target.name,
            sorted(keys),
            replica.id,
        )
        return bool(rows)

    async def leased(self, replica: Replica) -> bool:
        rows = await asyncio.to_thread(
            self.db.rows,
            "SELECT 1 FROM statefulmcp_replicas WHERE id = %s AND lease_until > clock_timestamp()",
            replica.id,
        )
        return bool(rows)

    async def acknowledgements(self, count: int) -> None:
        """Wait until `count` more calls have been acknowledged."""
        goal = self.history.acknowledged + count
        await until(
            lambda: self.history.acknowledged >= goal, self.patience, f"{count} more acknowledgements"
        )

    async def busy(self, replica: Replica) -> set[str]:
        """The busy keys `replica` owns, waiting for it to own some (a new phase if it owns none)."""
        assert self.load is not None
        found: set[str] = set()

        async def owns() -> bool:
            assert self.load is not None
            found.update(await self.owned(replica, self.load.hot))
            return bool(found)

        for _ in range(5):
            try:
                await until(owns, 3 * self.lease + 5, f"{replica.name} owning a busy key")
                return found
            except NotReached:
                await self.load.new_phase()
        raise NotReached(f"{replica.name} never owned a busy key over five phases")

    async def recovered(self, fault: FaultEvent) -> None:
        """Wait until a call on one of the fault's keys, sent after it, was acknowledged."""
        await until(
            lambda: self.history.first_ack(set(fault.keys), fault.instant) is not None,
            self.patience,
            f"an acknowledged call on a key moved by {fault.kind} of {fault.victim}",
        )
        log.info("%s of %s: a moved key answered again", fault.kind, fault.victim)
