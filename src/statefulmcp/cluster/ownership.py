"""Ownership: who owns each `(component, key)`, under which epoch, claimed in one statement.

The owner row of an instance holds the replica that may run it and an epoch that only grows.
Claiming takes the row when nobody holds it, when this replica does, or when its holder's lease
has expired, and bumps the epoch in the same statement (logged in `statefulmcp_claims`, which
the checker reads). Every commit is fenced by that epoch (see `state/postgres.py`). Releasing
keeps the epoch and clears the holder, so the next claim, by anyone, is immediate and still
bumps the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from statefulmcp.state.postgres import PgWorker, as_sql, from_sql

_CLAIM = """
WITH me AS (
    SELECT 1 FROM statefulmcp_replicas WHERE id = %(me)s AND lease_until > clock_timestamp()
),
claim AS (
    INSERT INTO statefulmcp_owners AS o (component, key, replica, epoch)
    SELECT %(c)s, %(k)s, %(me)s, 1 WHERE EXISTS (SELECT 1 FROM me)
    ON CONFLICT (component, key) DO UPDATE SET replica = EXCLUDED.replica, epoch = o.epoch + 1
    WHERE o.replica IS NULL OR o.replica = EXCLUDED.replica OR NOT EXISTS (
        SELECT 1 FROM statefulmcp_replicas r WHERE r.id = o.replica AND r.lease_until > clock_timestamp()
    )
    RETURNING o.epoch
),
logged AS (
    INSERT INTO statefulmcp_claims (component, key, replica, epoch)
    SELECT %(c)s, %(k)s, %(me)s, epoch FROM claim
)
SELECT epoch, NULL, NULL, EXISTS (SELECT 1 FROM me) FROM claim
UNION ALL
SELECT NULL, o.replica, r.url, EXISTS (SELECT 1 FROM me)
FROM statefulmcp_owners o LEFT JOIN statefulmcp_replicas r ON r.id = o.replica
WHERE o.component = %(c)s AND o.key = %(k)s AND NOT EXISTS (SELECT 1 FROM claim)
"""

_OWNED_BY_THE_LIVING = """
SELECT 1 FROM statefulmcp_owners o JOIN statefulmcp_replicas r ON r.id = o.replica
WHERE o.component = %(c)s AND o.key = k.key AND r.lease_until > clock_timestamp()
"""

_ORPHANS = f"""
SELECT k.key FROM (SELECT DISTINCT key FROM statefulmcp_state WHERE component = %(c)s) k
WHERE NOT EXISTS ({_OWNED_BY_THE_LIVING})
LIMIT %(limit)s
"""

_ORPHANS_SINGLETON = f"""
SELECT k.key FROM (SELECT '' AS key) k WHERE NOT EXISTS ({_OWNED_BY_THE_LIVING})
"""

_RELEASE = """
UPDATE statefulmcp_owners SET replica = NULL
WHERE component = %s AND key = %s AND replica = %s AND epoch = %s
"""


@dataclass(frozen=True, slots=True)
class Owner:
    """Another live replica owns the key: forward the call to `url`."""

    replica: str
    url: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """This replica owns the key now, under `epoch`."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Unleased:
    """This replica's own lease is not valid in the database: it may own nothing now."""


class Ownership:
    """Claims and releases on a connection of their own (a slow commit never delays a claim)."""

    def __init__(self, url: str, replica: str) -> None:
        self.replica = replica
        self._worker = PgWorker(url, "statefulmcp-pg-owners", _serve)

    async def claim(self, component: str, key: str) -> Claimed | Owner | Unleased:
        params = {"me": self.replica, "c": as_sql(component), "k": as_sql(key)}

        def run(conn: psycopg.Connection[Any]) -> Claimed | Owner | Unleased:
            row = conn.execute(_CLAIM, params).fetchone()
            if row is None:  # no row at all and no lease: the insert was refused
                return Unleased()
            epoch, replica, url, leased = row
            if epoch is not None:
                return Claimed(int(epoch))
            if not leased:
                return Unleased()
            return Owner(str(replica), url)

        result: Claimed | Owner | Unleased = await self._worker.submit(run)
        return result

    async def orphans(self, component: str, *, singleton: bool, limit: int = 1000) -> list[str]:
        """Keys of `component` with durable state (or the singleton) that no live replica owns."""

        def run(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                _ORPHANS_SINGLETON if singleton else _ORPHANS, {"c": as_sql(component), "limit": limit}
            ).fetchall()
            return [from_sql(key) for (key,) in rows]

        found: list[str] = await self._worker.submit(run)
        return found

    async def set_url(self, url: str) -> None:
        await self._worker.submit(
            lambda conn: conn.execute(
                "UPDATE statefulmcp_replicas SET url = %s WHERE id = %s", (url, self.replica)
            )
        )

    async def alive(self, replica: str) -> bool:
        """Whether `replica`'s lease is still valid in the database."""

        def run(conn: psycopg.Connection[Any]) -> bool:
            row = conn.execute(
                "SELECT 1 FROM statefulmcp_replicas WHERE id = %s AND lease_until > clock_timestamp()",
                (replica,),
            ).fetchone()
            return row is not None

        found: bool = await self._worker.submit(run)
        return found

    async def release(self, component: str, key: str, epoch: int) -> None:
        args = (as_sql(component), as_sql(key), self.replica, epoch)
        await self._worker.submit(lambda conn: conn.execute(_RELEASE, args))

    async def release_all(self) -> int:
        """Release every key this replica holds (a clean shutdown); returns how many."""

        def run(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "UPDATE statefulmcp_owners SET replica = NULL WHERE replica = %s", (self.replica,)
            )
            return cur.rowcount

        count: int = await self._worker.submit(run)
        return count

    async def replicas(self) -> list[dict[str, Any]]:
        """The live replicas, for the health view."""

        def run(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT id, url, started_at FROM statefulmcp_replicas WHERE lease_until > clock_timestamp() "
                "ORDER BY started_at"
            ).fetchall()
            return [{"id": i, "url": u, "since": s.isoformat()} for i, u, s in rows]

        found: list[dict[str, Any]] = await self._worker.submit(run)
        return found

    def close(self) -> None:
        self._worker.close()


def _serve(conn: psycopg.Connection[Any], jobs: list[Any]) -> list[tuple[Any, BaseException | None]]:
    answers: list[tuple[Any, BaseException | None]] = []
    for job in jobs:
        try:
            answers.append((job(conn), None))
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            answers.append((None, exc))
    return answers
