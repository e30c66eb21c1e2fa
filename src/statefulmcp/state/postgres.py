"""The PostgreSQL store: durable state that replicas share, with every commit fenced by its epoch.

Each connection belongs to one thread that serves a queue of jobs, as the SQLite writer does:
the thread takes everything queued at once and runs all pending commits as **one statement**
(group commit: N turns finishing together cost one round trip and one WAL flush), and the
engine loop never blocks on the network. Reads go through the same queue, so a read queued
after a write sees it (a load after a handle's delete must not bring the handle back).

Fencing: a commit carries the epoch its instance was activated under (`Change.epoch`). The
statement locks the owner rows of the instances it writes (`FOR SHARE`) and writes an instance's
rows only if this replica still owns it under that epoch; a replica that claims the instance
meanwhile bumps the epoch in an `UPDATE` of the same row, so it waits for the commit or the
commit sees the new epoch. A stale commit writes nothing and raises `StaleInstanceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from statefulmcp._errors import StaleInstanceError
from statefulmcp.engine import mailbox
from statefulmcp.state import DELETED, Change, CommitChain, StoreError

log = logging.getLogger("statefulmcp.state")

SCHEMA = """
CREATE TABLE IF NOT EXISTS statefulmcp_state (
    component text NOT NULL,
    key text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (component, key, name)
);
CREATE TABLE IF NOT EXISTS statefulmcp_replicas (
    id text PRIMARY KEY,
    url text,
    lease_until timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS statefulmcp_owners (
    component text NOT NULL,
    key text NOT NULL,
    replica text,
    epoch bigint NOT NULL,
    PRIMARY KEY (component, key)
);
CREATE INDEX IF NOT EXISTS statefulmcp_owners_replica ON statefulmcp_owners (replica);
CREATE TABLE IF NOT EXISTS statefulmcp_claims (
    id bigserial PRIMARY KEY,
    component text NOT NULL,
    key text NOT NULL,
    replica text NOT NULL,
    epoch bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS statefulmcp_cluster (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS statefulmcp_commits (
    id bigserial PRIMARY KEY,
    component text NOT NULL,
    key text NOT NULL,
    replica text NOT NULL,
    epoch bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

_SCHEMA_LOCK = 0x57A7EF
"""An advisory lock id: replicas starting together create the tables one at a time."""

_COMMIT = """
WITH f(component, key, epoch) AS (
    SELECT * FROM unnest(%(fc)s::text[], %(fk)s::text[], %(fe)s::bigint[])
),
held AS (
    SELECT o.component, o.key, o.epoch FROM statefulmcp_owners o JOIN f USING (component, key)
    WHERE o.replica = %(me)s AND o.epoch = f.epoch
    FOR SHARE OF o
),
ups AS (
    INSERT INTO statefulmcp_state (component, key, name, value)
    SELECT u.c, u.k, u.n, u.v
    FROM unnest(%(uc)s::text[], %(uk)s::text[], %(un)s::text[], %(uv)s::text[], %(uf)s::bool[])
        AS u(c, k, n, v, fenced)
    WHERE NOT u.fenced OR EXISTS (SELECT 1 FROM held h WHERE h.component = u.c AND h.key = u.k)
    ON CONFLICT (component, key, name) DO UPDATE SET value = EXCLUDED.value
),
dels AS (
    DELETE FROM statefulmcp_state s
    USING unnest(%(dc)s::text[], %(dk)s::text[], %(dn)s::text[], %(df)s::bool[]) AS d(c, k, n, fenced)
    WHERE s.component = d.c AND s.key = d.k AND s.name = d.n
        AND (NOT d.fenced OR EXISTS (SELECT 1 FROM held h WHERE h.component = d.c AND h.key = d.k))
),
audit AS (
    INSERT INTO statefulmcp_commits (component, key, replica, epoch)
    SELECT h.component, h.key, %(me)s, h.epoch FROM held h WHERE %(audit)s
)
SELECT component, key FROM held
"""

_Job = tuple[Any, asyncio.AbstractEventLoop, asyncio.Future[Any]]


def connect(url: str) -> psycopg.Connection[Any]:
    """One autocommit connection: every statement is its own transaction, and one round trip.

    `tcp_user_timeout` and keepalives bound how long a write to a database that went away can
    hang: without them a cut network holds a commit (and its caller) until the kernel gives up,
    minutes later.
    """
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
        tcp_user_timeout=5000,
        application_name="statefulmcp",
    )


def ensure_schema(url: str) -> None:
    """Create the tables if they are missing; raises `StoreError` saying what to check."""
    try:
        with connect(url) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                conn.execute(SCHEMA)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
    except psycopg.Error as exc:
        raise StoreError(f"--state {redact(url)}: cannot use the database ({_first_line(exc)})") from None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


def as_sql(value: str) -> str:
    """A component, key or state name as PostgreSQL `text` holds it: `text` cannot hold NUL (the
    handle marker's name starts with one), so `%` and NUL are escaped, reversibly."""
    if "%" not in value and "\x00" not in value:
        return value
    return value.replace("%", "%25").replace("\x00", "%00")


def from_sql(value: str) -> str:
    if "%" not in value:
        return value
    return value.replace("%00", "\x00").replace("%25", "%")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PgWorker:
    """One connection on one thread, serving queued jobs in batches; reconnects after a failure.

    `serve(conn, jobs)` gets every job queued at once and returns one `(result, error)` per
    job; each answer goes back to its caller's loop through that loop's mailbox.
    """

    def __init__(
        self,
        url: str,
        name: str,
        serve: Callable[[psycopg.Connection[Any], list[Any]], list[tuple[Any, BaseException | None]]],
    ) -> None:
        self.url = url
        self.name = name
        self._serve = serve
        self._conn: psycopg.Connection[Any] | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, work: Any) -> Any:
        """Queue `work` and wait for its answer; a cancelled caller still waits for the outcome."""
        if self.closed:
            raise StoreError(f"the connection to {redact(self.url)} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = _Handed(loop=loop)
        self._jobs.put((work, loop, future))
        try:
            return await future
        except asyncio.CancelledError:
            if not future.done():
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return future.result()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while True:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                batch.append(more)
            _reply(batch, self._answers(batch))
        if self._conn is not None:
            self._conn.close()
        for job in _drain(self._jobs):
            _reply([job], [(None, StoreError(f"the connection to {redact(self.url)} is closed"))])

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.url)
        return self._conn

    def _lost(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _answers(self, batch: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        try:
            conn = self.connection()
        except psycopg.Error as exc:
            error = StoreError(
                f"the database {redact(self.url)} cannot be reached ({_first_line(exc)}); nothing was "
                "written. Retry: the call can go to any replica"
            )
            return [(None, error) for _ in batch]
        try:
            return self._serve(conn, [job[0] for job in batch])
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._lost()
            log.warning("%s: the connection to %s broke: %s", self.name, redact(self.url), _first_line(exc))
            return [(None, _broken(job[0], exc)) for job in batch]

    def close(self) -> None:
        self.closed = True
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()


def _broken(work: Any, exc: BaseException) -> StoreError:
    if isinstance(work, _Commit):
        if work.chain is not None:
            work.chain.failed = True
        return StaleInstanceError(
            f"the connection to the database broke during a commit ({_first_line(exc)}); it may or may "
            "not have landed, so the instance was dropped and reloads from the database. Retry the call"
        )
    return StoreError(f"the connection to the database broke ({_first_line(exc)}); retry the call")


def _drain(jobs: queue.SimpleQueue[_Job | None]) -> Iterable[_Job]:
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None and job[1] is not None:
            yield job


class _Handed(asyncio.Future[Any]):
    """A job's future: it cannot be cancelled, only waited for (see `Store.commit`)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


def _reply(jobs: list[_Job], answers: list[tuple[Any, BaseException | None]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for (_, loop, future), (result, error) in zip(jobs, answers, strict=True):
        by_loop.setdefault(loop, []).append((future, result, error))
    for loop, items in by_loop.items():
        try:
            mailbox(loop).post(_settle, items)
        except RuntimeError:
            log.debug("a database reply's loop is closed; dropping the reply")


def _settle(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Commit:
    __slots__ = ("chain", "changes")

    def __init__(self, changes: list[Change], chain: CommitChain | None) -> None:
        self.changes = changes
        self.chain = chain


class PostgresStore:
    """A `Store` on PostgreSQL; shared by replicas, whose commits are fenced (see the module).

    `replica` is set by the cluster before the first commit: commits with an epoch land only if
    this replica owns the instance under that epoch. `audit=True` also records every commit in
    `statefulmcp_commits` (component, key, replica, epoch), in the same statement, for the checker.
    """

    def __init__(self, url: str, *, audit: bool = False) -> None:
        ensure_schema(url)
        self.url = url
        self.replica: str | None = None
        self.audit = audit
        self._worker = PgWorker(url, "statefulmcp-pg-store", self._serve)
        self._broken: str | None = None

    def health(self) -> str | None:
        return self._broken

    # -- serving (the worker's thread) ------------------------------------------------------

    def _serve(
        self, conn: psycopg.Connection[Any], jobs: list[Any]
    ) -> list[tuple[Any, BaseException | None]]:
        """Runs of commits become one statement each; other jobs run alone, in arrival order."""
        answers: list[tuple[Any, BaseException | None]] = []
        run: list[_Commit] = []
        for job in jobs:
            if isinstance(job, _Commit):
                run.append(job)
                continue
            if run:
                answers += self._commit_all(conn, run)
                run = []
            answers.append(self._one(conn, job))
        if run:
            answers += self._commit_all(conn, run)
        self._broken = None
        return answers

    @staticmethod
    def _one(
        conn: psycopg.Connection[Any], job: Callable[[psycopg.Connection[Any]], Any]
    ) -> tuple[Any, BaseException | None]:
        try:
            return job(conn), None
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except (psycopg.Error, UnicodeError) as exc:
            return None, StoreError(f"the database refused a request: {_first_line(exc)}")

    def _commit_all(
        self, conn: psycopg.Connection[Any], commits: list[_Commit]
    ) -> list[tuple[Any, BaseException | None]]:
        """Commit `commits` in one statement; a group where one instance has two epochs (a stale
        commit queued beside its successor's) is split so each statement fences one epoch per key."""
        epochs: dict[tuple[str, str], int | None] = {}
        for commit in commits:
            for change in commit.changes:
                if epochs.setdefault((change.component, change.key), change.epoch) != change.epoch:
                    return [a for c in commits for a in self._commit_all(conn, [c])]
        doomed = StoreError(
            "an earlier commit of this instance failed and this turn ran on its writes; nothing of "
            "this turn was written"
        )
        live = [c for c in commits if c.chain is None or not c.chain.failed]
        try:
            held = self._statement(conn, live) if live else set()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except (psycopg.Error, UnicodeError) as exc:
            if len(commits) > 1:  # one by one, so only the guilty commit fails
                return [a for c in commits for a in self._commit_all(conn, [c])]
            if commits[0].chain is not None:
                commits[0].chain.failed = True
            return [
                (
                    None,
                    StoreError(f"the database refused the commit ({_first_line(exc)}); nothing was written"),
                )
            ]
        answers: list[tuple[Any, BaseException | None]] = []
        for commit in commits:
            if commit not in live:
                answers.append((None, doomed))
            elif all(c.epoch is None or (c.component, c.key) in held for c in commit.changes):
                answers.append((None, None))
            else:
                if commit.chain is not None:
                    commit.chain.failed = True
                change = commit.changes[0]
                answers.append(
                    (
                        None,
                        StaleInstanceError(
                            f"{change.component}[{change.key!r}] is owned by another replica now (its epoch "
                            f"{change.epoch} was superseded); nothing was written. Retry the call: it goes "
                            "to the new owner"
                        ),
                    )
                )
        return answers

    def _statement(self, conn: psycopg.Connection[Any], commits: list[_Commit]) -> set[tuple[str, str]]:
        rows: dict[tuple[str, str, str], tuple[Any, bool]] = {}
        fences: set[tuple[str, str, int]] = set()
        for commit in commits:
            for change in commit.changes:
                fenced = change.epoch is not None
                if change.epoch is not None:
                    fences.add((as_sql(change.component), as_sql(change.key), change.epoch))
                for name, text in change.names.items():
                    rows[(as_sql(change.component), as_sql(change.key), as_sql(name))] = (text, fenced)
        ups = [(c, k, n, t, f) for (c, k, n), (t, f) in rows.items() if t is not DELETED]
        dels = [(c, k, n, f) for (c, k, n), (t, f) in rows.items() if t is DELETED]
        params = {
            "me": self.replica or "",
            "audit": self.audit,
            "fc": [f[0] for f in fences],
            "fk": [f[1] for f in fences],
            "fe": [f[2] for f in fences],
            "uc": [u[0] for u in ups],
            "uk": [u[1] for u in ups],
            "un": [u[2] for u in ups],
            "uv": [u[3] for u in ups],
            "uf": [u[4] for u in ups],
            "dc": [d[0] for d in dels],
            "dk": [d[1] for d in dels],
            "dn": [d[2] for d in dels],
            "df": [d[3] for d in dels],
        }
        held = conn.execute(_COMMIT, params).fetchall()
        return {(from_sql(c), from_sql(k)) for c, k in held}

    # -- the Store protocol (engine loop) ---------------------------------------------------

    async def load(self, component: str, key: str) -> dict[str, Any]:
        def read(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT name, value FROM statefulmcp_state WHERE component = %s AND key = %s",
                (as_sql(component), as_sql(key)),
            ).fetchall()
            return {from_sql(name): value for name, value in rows}

        return dict(await self._worker.submit(read))

    async def commit(self, changes: list[Change], *, chain: CommitChain | None = None) -> None:
        if chain is not None and chain.failed:
            raise StoreError(
                "an earlier commit of this instance failed and this turn ran on its writes; nothing of "
                "this turn was written"
            )
        await self._worker.submit(_Commit(changes, chain))

    async def keys(self, component: str) -> list[str]:
        def read(conn: psycopg.Connection[Any]) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT key FROM statefulmcp_state WHERE component = %s", (as_sql(component),)
            ).fetchall()
            return [from_sql(key) for (key,) in rows]

        return list(await self._worker.submit(read))

    async def purge(self, component: str) -> None:
        await self._worker.submit(
            lambda conn: conn.execute(
                "DELETE FROM statefulmcp_state WHERE component = %s", (as_sql(component),)
            )
        )

    async def delete_instance(self, component: str, key: str) -> None:
        await self._worker.submit(
            lambda conn: conn.execute(
                "DELETE FROM statefulmcp_state WHERE component = %s AND key = %s",
                (as_sql(component), as_sql(key)),
            )
        )

    def close(self) -> None:
        self._worker.close()
