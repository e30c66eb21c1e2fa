"""The embedded default store: one SQLite file in WAL mode, written by one dedicated thread.

Every request (a load, a commit, a purge) goes through one queue to one writer thread that owns
the only connection. The writer takes everything queued at once and runs all pending commits in
one transaction, so N turns finishing together cost one fsync (group commit): throughput grows
with concurrency instead of being capped at one turn per fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statefulmcp.engine import mailbox
from statefulmcp.state import DELETED, Change, CommitChain, StoreError, Sync

log = logging.getLogger("statefulmcp.state")

CHECKPOINT_TURNS = 1000
"""After this many committed turns the writer copies the WAL back into the database file.

At most about 4 MiB of WAL when each turn changes one page (SQLite's own default is 1000 pages);
concurrent turns share pages, so under load a checkpoint comes every few dozen group commits. A checkpoint that completes lets the next
commit write from the start of the WAL again, so the file stops growing: a commit that extends
the file pays for it in its fsync (about twice the cost on the disks measured).
"""

INLINE_COMMIT_SECONDS = 0.002
"""A commit runs inline on the caller's thread while the recent ones took less than this.

Handing a commit to the writer thread and back costs two cross-thread wake-ups, which on a
fast disk cost more than the fsync itself; inline, a lone turn pays only its commit. But an
inline commit blocks the caller's thread (the engine, where every instance lives), so as soon as
fsyncs get slow the store falls back to the writer thread, where a slow disk stalls only the
turns waiting for their own commit, and concurrent turns share one fsync (group commit).
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    component TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (component, key, name)
) WITHOUT ROWID
"""

_UPSERT = "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)"
_DELETE = "DELETE FROM state WHERE component = ? AND key = ? AND name = ?"

_Job = tuple[Callable[[sqlite3.Connection], Any], asyncio.AbstractEventLoop, asyncio.Future[Any], bool]

_DOOMED = (
    "could not commit state to {path}: an earlier commit of this instance failed and this turn ran "
    "on its writes; nothing of this turn was written"
)

_CHECKPOINT: Any = ("checkpoint",)
"""Queued by an inline commit that crossed `CHECKPOINT_TURNS`, to wake the writer for a checkpoint."""


class SqliteStore:
    """A `Store` on one SQLite file. `sync="os"` survives an OS crash; `"process"` only kill -9."""

    def __init__(self, path: Path, *, sync: Sync = "os") -> None:
        self.path = path.resolve() if path.is_absolute() else (Path.cwd() / path)
        self.sync = sync
        self._lock_file = self._take_lock()
        try:
            self._db = self._connect()
        except BaseException:
            os.close(self._lock_file)
            raise
        try:
            # Held open to ask, per commit, whether the file still has a name (see `_check_linked`).
            self._file = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._db.close()
            os.close(self._lock_file)
            raise StoreError(f"state file {self.path} cannot be opened ({exc.strerror})") from None
        self._identity = self._stat()
        self._broken: str | None = None
        self._db_lock = threading.Lock()  # the connection, between the writer and inline commits
        # Jobs submitted (engine side) and served (writer side), each written by one thread only, so
        # no lock: their difference is what is queued or running. Inline commits need it to be 0.
        self._submitted = 0
        self._served = 0
        self._recent: deque[float] = deque(maxlen=8)
        self._batch: list[tuple[_Commit, asyncio.AbstractEventLoop, asyncio.Future[Any]]] = []
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._unchecked = 0  # turns committed since the last checkpoint (under `_db_lock`)
        self._closing = threading.Event()
        self.alone: Callable[[], bool] | None = None
        """Set by the host: whether the committing call is the only one on the engine. Then no
        other commit can join its group, so it commits at once instead of an iteration later."""
        self._thread = threading.Thread(target=self._run, name="statefulmcp-store", daemon=True)
        self._thread.start()

    # -- opening ----------------------------------------------------------------------------

    def _take_lock(self) -> int:
        """Refuse to share the file with another live process: two writers would mean two truths."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"state file {self.path}: cannot create it or its lock file ({exc.strerror}); "
                "check that the directory exists and is writable, or pass another --state"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"state file {self.path} is in use by another live statefulmcp process; stop it, "
                "or give this one its own --state"
            ) from None
        return fd

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'os' else 'NORMAL'}")
            # Checkpoints run on the writer thread between commits (see `_checkpoint`), never inside one.
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM (SELECT 1 FROM state LIMIT 1)").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, exc)) from None
        return db

    # -- health -----------------------------------------------------------------------------

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def health(self) -> str | None:
        """None while commits can be made durable; otherwise why not (shown by `/ready`).

        The file is checked by identity: if it was deleted or replaced while serving, SQLite
        would go on writing to the unlinked inode and everything acknowledged would be gone at
        restart, so from then on every commit fails and the server reports not ready.
        """
        if self._broken is None and self._stat() != self._identity:
            self._lost_file()
        return self._broken

    def _check_linked(self) -> None:
        """Before each commit: fail if the file lost its last name (deleted, or renamed over).

        `fstat` of a held descriptor costs a third of a `stat` of the path, on every commit. What
        it cannot see, the file moved away under another name, `health` sees by path, at every
        checkpoint and every `/ready`.
        """
        if self._broken is None and os.fstat(self._file).st_nlink == 0:
            self._lost_file()
        if self._broken is not None:
            raise StoreError(self._broken)

    def _lost_file(self) -> None:
        self._broken = (
            f"state file {self.path} was deleted or replaced while serving; nothing written since is "
            "durable. Restart the server (after restoring the file from a backup if it was deleted)"
        )
        log.error("%s", self._broken)

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve_forever()
        except BaseException as exc:  # the writer must never vanish silently: fail every job loudly
            self._broken = f"the state writer thread of {self.path} stopped ({type(exc).__name__}: {exc})"
            log.exception("%s; every commit fails from now on", self._broken)
            self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job is not _CHECKPOINT:
                _reply([(job, None, StoreError(self._broken or "the store is closed"))])

    def _serve_forever(self) -> None:
        db = self._db
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
            with self._db_lock:
                self._serve(db, [job for job in batch if job is not _CHECKPOINT])
                if self._unchecked >= CHECKPOINT_TURNS:
                    self._checkpoint(db)
            self._served += len(batch)
        with contextlib.suppress(sqlite3.Error):  # leave a small WAL behind; not needed for safety
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        """Copy the WAL back into the database file, on the writer's own connection, between commits.

        SQLite's automatic checkpoint would run inside whichever commit crosses its threshold,
        stalling every turn of that group for the checkpoint's I/O. Here the group's replies have
        already gone out. A checkpoint on another connection, beside a steady stream of commits,
        never catches up with the last frame, so the WAL never rewinds and grows without bound;
        on the writer's connection nothing writes meanwhile, so it completes and the next commit
        starts the WAL over.
        """
        self._unchecked = 0
        if self.health() is not None:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed (will retry): %s", self.path, exc)

    def _serve(self, db: sqlite3.Connection, batch: list[_Job]) -> None:
        """Serve a batch in arrival order: each run of writes is one transaction (group commit).

        Order matters: a read queued after a write must see it (a load after a handle's delete
        must not bring the handle back).
        """
        results: list[tuple[_Job, Any, BaseException | None]] = []
        run: list[_Job] = []
        for job in batch:
            if job[3]:
                run.append(job)
                continue
            if run:
                results += self._write(db, run)
                run = []
            results.append(self._read(db, job))
        if run:
            results += self._write(db, run)
        _reply(results)

    @staticmethod
    def _read(db: sqlite3.Connection, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        try:
            return job, job[0](db), None
        except Exception as exc:  # noqa: BLE001 - one job fails, the writer serves on
            return job, None, StoreError(f"could not read state: {type(exc).__name__}: {exc}")

    def _write(
        self, db: sqlite3.Connection, jobs: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Commit `jobs` together; if that fails, one by one, so only the guilty job fails.

        A job of a failed chain fails without being tried (see `CommitChain`); a failed job fails
        its chain.
        """
        doomed = [job for job in jobs if _chain_failed(job)]
        if doomed:
            error = StoreError(_DOOMED.format(path=self.path))
            rest = [job for job in jobs if not _chain_failed(job)]
            return [(job, None, error) for job in doomed] + (self._write(db, rest) if rest else [])
        if len(jobs) == 1:
            try:
                return [(jobs[0], self._write_one(db, jobs[0][0]), None)]
            except StoreError as exc:
                return [(jobs[0], None, exc)]
        try:
            outs = self._transaction(db, [job[0] for job in jobs])
            return [(job, out, None) for job, out in zip(jobs, outs, strict=True)]
        except Exception:  # noqa: BLE001 - one job fails, the writer serves on
            return [item for job in jobs for item in self._write(db, [job])]

    def _write_one(self, db: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Commit one job alone: its result, or the `StoreError` saying nothing of it was written.

        A commit whose chain failed fails without being tried; a commit that fails fails its chain.
        """
        chain = work.chain if isinstance(work, _Commit) else None
        if chain is not None and chain.failed:
            raise StoreError(_DOOMED.format(path=self.path))
        try:
            return self._transaction(db, [work])[0]
        except Exception as exc:  # noqa: BLE001 - this job fails, the store serves on
            error = StoreError(
                f"could not commit state to {self.path}: {_cause(exc)}; nothing of this turn was written"
            )
            log.error("%s", error)
            if chain is not None:
                chain.failed = True
            raise error from None

    def _transaction(
        self, db: sqlite3.Connection, works: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[Any]:
        """Run `works` (commits and other writes) as one transaction; their results, in order."""
        self._check_linked()
        started = time.perf_counter()
        upserts, deletes = _Commit.rows([work for work in works if isinstance(work, _Commit)])
        try:
            if len(works) == 1 and isinstance(works[0], _Commit) and len(upserts) + len(deletes) == 1:
                # One row: the statement is its own transaction (SQLite's autocommit), with the
                # same lock and fsync as BEGIN ... COMMIT and two statements fewer.
                db.execute(*((_UPSERT, upserts[0]) if upserts else (_DELETE, deletes[0])))
                outs: list[Any] = [None]
            else:
                db.execute("BEGIN IMMEDIATE")
                # The turns of a group share the statements as well as the fsync.
                _Commit.apply(db, upserts, deletes)
                outs = [None if isinstance(work, _Commit) else work(db) for work in works]
                db.execute("COMMIT")
            self._recent.append(time.perf_counter() - started)
            self._unchecked += len(works)
            return outs
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback after a failed commit failed")
            raise

    async def _submit(self, work: Callable[[sqlite3.Connection], Any], *, write: bool) -> Any:
        if self._broken is not None and not self._thread.is_alive():
            raise StoreError(self._broken)
        if self._batch:
            self._flush()  # commits gathered earlier go first: a read must see them
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue((work, loop, future, write))
        return await future

    def _enqueue(self, job: _Job) -> None:
        """Hand one job to the writer thread; `_submitted` counts it so an inline commit can tell
        whether anything is queued ahead of it (the writer counts `_served`)."""
        self._submitted += 1
        self._jobs.put(job)

    def _flush(self) -> None:
        """Send the commits gathered in this loop iteration: a lone one inline, several as a group.

        Turns that reach their commit in the same iteration of the engine loop are concurrent
        callers: they go to the writer thread together (one fsync for all, while the engine runs
        other turns). A lone commit, with nothing queued ahead, runs inline if commits are fast.
        """
        batch, self._batch = self._batch, []
        if len(batch) == 1:
            commit, _, future = batch[0]
            try:
                inline = self._commit_inline(commit)
            except StoreError as exc:
                future.set_exception(exc)
                return
            if inline:
                future.set_result(None)
                return
        for commit, loop, future in batch:
            self._enqueue((commit, loop, future, True))

    def _commit_inline(self, commit: _Commit) -> bool:
        """Commit on this thread if nothing is queued ahead and commits are fast; False if not.

        Raises the commit's `StoreError` when it was tried and failed. The same statements and
        the same failure rules as a group of one on the writer (`_write`), without the job
        tuples, futures and lists a group needs: this is the one-caller hot path.
        """
        if self._recent and max(self._recent) > INLINE_COMMIT_SECONDS:
            self._recent.append(0.0)  # decay: try inline again after a few commits on the writer
            return False
        if not self._db_lock.acquire(blocking=False):
            return False
        try:
            if self._submitted != self._served:
                return False
            self._write_one(self._db, commit)
            if self._unchecked >= CHECKPOINT_TURNS:
                self._enqueue(_CHECKPOINT)  # the writer checkpoints, off this (the engine's) thread
        finally:
            self._db_lock.release()
        return True

    # -- the Store protocol -----------------------------------------------------------------

    async def load(self, component: str, key: str) -> dict[str, Any]:
        def read(db: sqlite3.Connection) -> dict[str, Any]:
            rows = db.execute(
                "SELECT name, value FROM state WHERE component = ? AND key = ?", (component, key)
            ).fetchall()
            return {name: value for name, value in rows}

        return dict(await self._submit(read, write=False))

    async def commit(self, changes: list[Change], *, chain: CommitChain | None = None) -> None:
        if self._broken is not None or self._closing.is_set():
            raise StoreError(self._broken or f"the store of {self.path} is closed")
        alone = not self._batch and self.alone is not None and self.alone()
        if alone and self._commit_inline(_Commit(changes, chain)):  # raises the commit's error
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = _Handed(loop=loop)
        if self._submitted != self._served and not self._batch:
            # The writer is busy: this commit joins its next group, with no detour.
            self._enqueue((_Commit(changes, chain), loop, future, True))
        else:
            self._batch.append((_Commit(changes, chain), loop, future))
            if len(self._batch) == 1:
                loop.call_soon(self._flush)
        try:
            await future
        except asyncio.CancelledError:
            if not future.done():
                raise
            # Cancelled while the commit was in flight: its outcome is still the answer.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            future.result()

    async def delete_instance(self, component: str, key: str) -> None:
        """Forget one instance's state entirely (a closed handle)."""
        await self._submit(
            lambda db: db.execute("DELETE FROM state WHERE component = ? AND key = ?", (component, key)),
            write=True,
        )

    async def keys(self, component: str) -> list[str]:
        def read(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT DISTINCT key FROM state WHERE component = ?", (component,)).fetchall()
            return [key for (key,) in rows]

        return list(await self._submit(read, write=False))

    async def purge(self, component: str) -> None:
        await self._submit(
            lambda db: db.execute("DELETE FROM state WHERE component = ?", (component,)), write=True
        )

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        os.close(self._file)
        os.close(self._lock_file)


class _Handed(asyncio.Future[Any]):
    """The future of a commit handed to SQLite: it cannot be cancelled, only waited for.

    A cancelled caller is woken when the commit ends, and learns its outcome (see
    `SqliteStore.commit`), instead of hearing "cancelled" about a commit that then lands.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Commit:
    """A commit job: plain data, so the writer can merge a whole group into two statements."""

    __slots__ = ("chain", "changes")

    def __init__(self, changes: list[Change], chain: CommitChain | None = None) -> None:
        self.changes = changes
        self.chain = chain

    def __call__(self, db: sqlite3.Connection) -> None:
        _Commit.apply(db, *_Commit.rows([self]))

    @staticmethod
    def rows(
        commits: list[_Commit],
    ) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str]]]:
        """The rows to upsert and to delete for `commits`, in order."""
        upserts: list[tuple[str, str, str, str]] = []
        deletes: list[tuple[str, str, str]] = []
        for commit in commits:
            for change in commit.changes:
                for name, text in change.names.items():
                    if text is DELETED:
                        deletes.append((change.component, change.key, name))
                    else:
                        upserts.append((change.component, change.key, name, text))
        return upserts, deletes

    @staticmethod
    def apply(
        db: sqlite3.Connection, upserts: list[tuple[str, str, str, str]], deletes: list[tuple[str, str, str]]
    ) -> None:
        if upserts:
            db.executemany(_UPSERT, upserts)
        if deletes:
            db.executemany(_DELETE, deletes)


def _chain_failed(job: _Job) -> bool:
    work = job[0]
    return isinstance(work, _Commit) and work.chain is not None and work.chain.failed


def _cause(exc: BaseException) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return "a state name, key or value holds a lone surrogate, which is not valid Unicode text"
    if isinstance(exc, StoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _reply(results: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Hand each result back to its caller's loop through that loop's mailbox, one post per loop
    (on the engine loop, drained together with whatever else reached the engine meanwhile)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for item in results:
        by_loop.setdefault(item[0][1], []).append(item)
    for loop, items in by_loop.items():
        try:
            mailbox(loop).post(_settle, items)
        except RuntimeError:
            log.debug("a store reply's loop is closed; dropping the reply")


def _settle(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in items:
        future = job[2]
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return (
            f"state file {path} is corrupt or not a SQLite database ({text}); it was left untouched. "
            "Restore it from a backup, or move it aside to start with empty state"
        )
    if "readonly" in text or "read-only" in text:
        return f"state file {path} is on a read-only path ({text}); pass a writable --state"
    if "unable to open" in text:
        return f"state file {path} cannot be opened ({text}); check the path and its permissions"
    if "locked" in text:
        return f"state file {path} is locked by another process ({text})"
    return f"state file {path}: {text}"
