"""The embedded SQLite store: one bad commit fails alone, reads see earlier writes, and a state
file deleted while serving stops acknowledgements instead of losing them silently."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from statefulmcp import StoreError
from statefulmcp.state import DELETED, Change
from statefulmcp.state.sqlite import SqliteStore


def _rows(path: Path) -> dict[tuple[str, str, str], str]:
    with sqlite3.connect(path) as db:
        return {(c, k, n): v for c, k, n, v in db.execute("SELECT component, key, name, value FROM state")}


def test_a_lone_surrogate_fails_its_commit_only_and_the_writer_survives(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")

    async def scenario() -> None:
        with pytest.raises(StoreError, match="lone surrogate"):
            await store.commit([Change("c", "k", {"\ud800": "1"})])
        await store.commit([Change("c", "k", {"n": "2"})])

    asyncio.run(scenario())
    store.close()
    assert _rows(tmp_path / "s.db") == {("c", "k", "n"): "2"}


def test_a_grouped_commit_with_one_bad_change_fails_only_that_one(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")

    async def scenario() -> list[BaseException | None]:
        # Queued together, so the writer sees them as one group.
        results = await asyncio.gather(
            *(store._submit(_commit(i), write=True) for i in range(5)), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    results = asyncio.run(scenario())
    store.close()
    assert [r is not None for r in results] == [False, False, True, False, False]
    assert sorted(k for _, k, _ in _rows(tmp_path / "s.db")) == ["0", "1", "3", "4"]


def _commit(i: int) -> Any:
    from statefulmcp.state.sqlite import _Commit

    name = "\udfff" if i == 2 else "n"
    return _Commit([Change("c", str(i), {name: str(i)})])


def test_a_load_queued_after_a_delete_sees_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")

    async def scenario() -> dict[str, str]:
        await store.commit([Change("c", "h", {"\x00open": "true"})])
        delete = asyncio.ensure_future(store.delete_instance("c", "h"))
        load = asyncio.ensure_future(store.load("c", "h"))
        await delete
        return await load

    assert asyncio.run(scenario()) == {}
    store.close()


def test_a_state_file_deleted_while_serving_fails_later_commits_and_reports_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)

    async def scenario() -> None:
        await store.commit([Change("c", "k", {"n": "1"})])
        assert store.health() is None
        path.unlink()
        with pytest.raises(StoreError, match="deleted or replaced"):
            await store.commit([Change("c", "k", {"n": "2"})])

    asyncio.run(scenario())
    assert "deleted or replaced" in (store.health() or "")
    store.close()


def test_deletes_and_upserts_are_durable_and_close_leaves_no_store_thread(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)

    async def scenario() -> None:
        await store.commit([Change("c", "k", {"a": "1", "b": "2"})])  # inline (nothing queued)
        await asyncio.gather(*(store.commit([Change("c", f"k{i}", {"a": str(i)})]) for i in range(20)))
        await store.commit([Change("c", "k", {"a": DELETED})])

    asyncio.run(scenario())
    store.close()
    rows = _rows(path)
    assert rows[("c", "k", "b")] == "2" and ("c", "k", "a") not in rows
    assert all(rows[("c", f"k{i}", "a")] == str(i) for i in range(20))
    # The store's own threads only: other tests in this worker may leave a wasm ticker lingering.
    assert not [t for t in threading.enumerate() if t.name == "statefulmcp-store"]


def test_the_wal_stays_bounded_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    """Lone commits (inline) and concurrent ones (groups on the writer), thousands of them, never
    pause long enough for an outside checkpoint to catch up: the store's own checkpoints must
    rewind the WAL, or it grows without bound and every commit extends the file."""
    from statefulmcp.state.sqlite import CHECKPOINT_TURNS

    store = SqliteStore(tmp_path / "s.db")

    async def scenario() -> None:
        for i in range(10 * CHECKPOINT_TURNS):
            await store.commit([Change("c", "solo", {"n": str(i)})])
        for i in range(10 * CHECKPOINT_TURNS // 16):
            await asyncio.gather(*(store.commit([Change("c", f"k{j}", {"n": str(i)})]) for j in range(16)))

    asyncio.run(scenario())
    wal = (tmp_path / "s.db-wal").stat().st_size
    store.close()
    page = 4096 + 24  # a WAL frame: one page and its header
    assert wal <= 4 * CHECKPOINT_TURNS * page, wal
    assert _rows(tmp_path / "s.db")[("c", "solo", "n")] == str(10 * CHECKPOINT_TURNS - 1)


def test_commits_of_a_failed_chain_fail_without_writing_and_others_are_untouched(tmp_path: Path) -> None:
    """A pipelined tick's commit fails (here: a name SQLite cannot take); the commits of the same
    instance queued after it ran on its writes, so they fail too, in the same group or later.
    Another instance's commit in the same group, and a commit without a chain, land."""
    from statefulmcp.state import CommitChain

    store = SqliteStore(tmp_path / "s.db")
    chain = CommitChain()

    async def scenario() -> list[bool]:
        results = await asyncio.gather(
            store.commit([Change("c", "k", {"n": "1"})], chain=chain),
            store.commit([Change("c", "k", {"\ud800": "x", "n": "2"})], chain=chain),
            store.commit([Change("c", "k", {"n": "3"})], chain=chain),
            store.commit([Change("c", "other", {"n": "9"})]),
            return_exceptions=True,
        )
        later = await asyncio.gather(
            store.commit([Change("c", "k", {"n": "4"})], chain=chain), return_exceptions=True
        )
        return [isinstance(r, StoreError) for r in [*results, *later]]

    failed = asyncio.run(scenario())
    store.close()
    assert failed == [False, True, True, False, True]
    assert _rows(tmp_path / "s.db") == {("c", "k", "n"): "1", ("c", "other", "n"): "9"}
    assert chain.failed


def test_a_lone_inline_commit_keeps_the_failure_rules_of_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one call on the engine (`alone`), commits run inline, never handed to the writer: a
    failed one says nothing was written and fails its chain, whose next commit fails untried, and
    another instance's commit lands."""
    from statefulmcp.state import CommitChain, sqlite

    # Inline only while commits are fast: a loaded machine's slow fsync must not send these to
    # the writer, which is not what this test is about.
    monkeypatch.setattr(sqlite, "INLINE_COMMIT_SECONDS", 3600.0)
    store = SqliteStore(tmp_path / "s.db")
    store.alone = lambda: True
    chain = CommitChain()

    async def scenario() -> None:
        await store.commit([Change("c", "k", {"n": "1"})], chain=chain)
        with pytest.raises(StoreError, match=r"lone surrogate.*nothing of this turn was written"):
            await store.commit([Change("c", "k", {"\ud800": "x", "n": "2"})], chain=chain)
        with pytest.raises(StoreError, match="an earlier commit of this instance failed"):
            await store.commit([Change("c", "k", {"n": "3"})], chain=chain)
        await store.commit([Change("c", "other", {"n": "9"})])

    asyncio.run(scenario())
    handed = store._submitted
    store.close()
    assert handed == 0
    assert chain.failed
    assert _rows(tmp_path / "s.db") == {("c", "k", "n"): "1", ("c", "other", "n"): "9"}
