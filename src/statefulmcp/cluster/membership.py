"""Membership: this replica's lease in PostgreSQL, renewed every `lease/3` on a thread of its own.

A replica whose lease has expired is dead to the others: they may claim its keys. So a replica
must stop serving its keys *before* its lease can expire, not after. The database sets
`lease_until = now() + lease` when it runs the renewal, which is after this replica sent it, so
`sent + lease` (by this replica's monotonic clock) is never later than the expiry the others
see; this replica trusts its lease until `sent + lease * TRUST` only, leaving a margin for clock
rate differences and scheduling. `holds()` reads the clock itself, so a replica that wakes up
from `SIGSTOP` refuses turns at once, before its renewal thread has even run.

If a renewal finds the lease already expired in the database, others may have taken keys over:
this replica starts a new life (`generation` + 1), and every instance activated in an earlier
generation is dropped before it serves again.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from statefulmcp.state import StoreError
from statefulmcp.state.postgres import connect, redact

log = logging.getLogger("statefulmcp.cluster")

TRUST = 0.75
"""The share of the lease this replica trusts after the send time of its last renewal."""

_RENEW = """
UPDATE statefulmcp_replicas SET lease_until = clock_timestamp() + %(lease)s * interval '1 second', url = %(url)s
WHERE id = %(id)s AND lease_until > clock_timestamp()
RETURNING 1
"""

_REGISTER = """
INSERT INTO statefulmcp_replicas (id, url, lease_until)
VALUES (%(id)s, %(url)s, clock_timestamp() + %(lease)s * interval '1 second')
ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, lease_until = EXCLUDED.lease_until
"""


def new_replica_id() -> str:
    """Unique per process start: a restarted replica is a new member, never its old self."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Membership:
    """This replica's lease. `holds(generation)` is what every turn checks before it starts."""

    def __init__(
        self, url: str, *, advertise: str | None, lease: float, on_new_life: Callable[[], None]
    ) -> None:
        self.url = url
        self.id = new_replica_id()
        self.advertise = advertise
        self.lease = lease
        self.generation = 0
        self.valid_until = 0.0
        self.renewals = 0
        self._on_new_life = on_new_life
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="statefulmcp-lease", daemon=True)

    secret = b""
    """The replicas' shared secret (kept in the database, made by the first replica to start):
    what a forwarded call proves it comes from a replica with."""

    def start(self) -> None:
        """Register (raising `StoreError` if the database cannot be used) and start renewing."""
        sent = time.monotonic()
        try:
            self._conn = connect(self.url)
            self._conn.execute(_REGISTER, self._params())
            self.secret = _cluster_secret(self._conn)
        except psycopg.Error as exc:
            raise StoreError(f"--state {redact(self.url)}: cannot register this replica ({exc})") from None
        self.valid_until = sent + self.lease * TRUST
        self._thread.start()
        log.info("replica %s joined (lease %g s, advertised at %s)", self.id, self.lease, self.advertise)

    def holds(self, generation: int) -> bool:
        """Whether an instance activated in `generation` may still run turns here."""
        return generation == self.generation and time.monotonic() < self.valid_until

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until

    def _params(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.advertise, "lease": self.lease}

    def _run(self) -> None:
        while not self._stop.wait(self.lease / 3):
            self._renew()

    def _renew(self) -> None:
        sent = time.monotonic()
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self.url)
            renewed = self._conn.execute(_RENEW, self._params()).fetchone() is not None
            if not renewed:
                # Expired (or removed) in the database: others may own our keys by now.
                self._conn.execute(_REGISTER, self._params())
        except psycopg.Error as exc:
            if time.monotonic() >= self.valid_until:
                log.error(
                    "replica %s cannot renew its lease (%s); it serves no keys until it can", self.id, exc
                )
            else:
                log.warning("replica %s: lease renewal failed (%s); retrying", self.id, exc)
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            return
        if not renewed:
            self.generation += 1
            log.error(
                "replica %s: its lease had expired; its keys may have moved, so every instance is "
                "dropped and activated again on demand (generation %d)",
                self.id,
                self.generation,
            )
            self._on_new_life()
        self.valid_until = sent + self.lease * TRUST
        self.renewals += 1

    def stop(self) -> None:
        """Stop renewing and leave: the row is deleted, so nobody waits for this lease to expire."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.valid_until = 0.0
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self.url)
            self._conn.execute("DELETE FROM statefulmcp_replicas WHERE id = %s", (self.id,))
        except psycopg.Error as exc:
            log.warning("replica %s could not remove its lease row (%s); it expires by itself", self.id, exc)
        finally:
            if self._conn is not None:
                self._conn.close()


def _cluster_secret(conn: psycopg.Connection[Any]) -> bytes:
    """The secret every replica of this database shares; the first replica to start makes it."""
    conn.execute(
        "INSERT INTO statefulmcp_cluster (name, value) VALUES ('forward-secret', %s) ON CONFLICT DO NOTHING",
        (secrets.token_hex(32),),
    )
    row = conn.execute("SELECT value FROM statefulmcp_cluster WHERE name = 'forward-secret'").fetchone()
    assert row is not None
    return bytes.fromhex(row[0])
