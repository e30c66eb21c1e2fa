"""Durable state: the store protocol the instances commit to, and how to open one from a URL.

Instances never talk to a database directly. At the end of each turn they hand the store the
keys they changed; the store makes them durable (sharing one commit among concurrent turns)
and only then does the reply leave. A store is anything with this small protocol, so a
PostgreSQL store can be added without touching instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from statefulmcp._errors import StoreError

__all__ = ["DELETED", "Change", "CommitChain", "Store", "StoreError", "Sync", "is_postgres", "store_path"]

Sync = Literal["os", "process"]

DEFAULT_STATE = Path(".statefulmcp") / "state.db"


class _Deleted:
    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()
"""The value of a name in a change set that the turn deleted."""


@dataclass(frozen=True, slots=True)
class Change:
    """What one turn changed in one instance's state: name -> JSON text, or `DELETED`.

    `epoch` is the ownership epoch the instance was activated under, when replicas share the
    store: the commit lands only if that epoch is still the instance's current one (fencing).
    """

    component: str
    key: str
    names: dict[str, Any]
    epoch: int | None = None


class CommitChain:
    """The commits of one instance that may depend on each other: all or nothing, in order.

    A background tick hands its commit over without waiting for it (pipelined), and the next
    tick builds on memory that already holds the first one's writes. If the first commit then
    fails while a later one lands, the disk holds a state memory never had. A store that gets a
    commit with a chain whose `failed` is set fails it without writing anything, and sets
    `failed` when a chained commit fails. One chain per live instance: a fresh instance, built
    from what the store holds, starts a fresh chain.
    """

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False


class Store(Protocol):
    """Durable per-instance state. Methods are awaited on the engine loop."""

    async def load(self, component: str, key: str) -> dict[str, Any]:
        """The committed state of one instance (empty if it has none)."""
        ...

    async def commit(self, changes: list[Change], *, chain: CommitChain | None = None) -> None:
        """Make `changes` durable atomically; returns only once they are. Raises `StoreError`.

        With `chain`, fail without writing if an earlier commit of the chain failed (see
        `CommitChain`); commits are served in the order they are called.

        Cancellation-safe: once called, the commit's outcome is the answer. A cancellation that
        arrives meanwhile waits for it (and is then withdrawn), so the caller never hears
        "cancelled" about a commit that landed.
        """
        ...

    async def keys(self, component: str) -> list[str]:
        """The keys of every instance of `component` that has durable state."""
        ...

    async def purge(self, component: str) -> None:
        """Delete every instance's state of `component`."""
        ...

    async def delete_instance(self, component: str, key: str) -> None:
        """Delete one instance's state (a closed handle)."""
        ...

    def close(self) -> None:
        """Finish pending commits and release the store."""
        ...


def is_postgres(url: object) -> bool:
    """Whether a `--state` value names a PostgreSQL database (`postgresql://...`)."""
    return isinstance(url, str) and url.startswith(("postgresql://", "postgres://"))


def store_path(url: str | Path | None) -> Path:
    """The file a `--state` value names.

    `sqlite:///relative/path`, `sqlite:////absolute/path` (the usual four-slash convention), or a
    plain path; `None` means the default `./.statefulmcp/state.db`.
    """
    if url is None:
        return DEFAULT_STATE
    text = str(url)
    if text.startswith("sqlite://"):
        rest = text.removeprefix("sqlite://")
        if not rest.startswith("/"):
            raise StoreError(f"--state {text!r}: write sqlite:///relative/path or sqlite:////absolute/path")
        rest = rest[1:]
        if not rest:
            raise StoreError(f"--state {text!r}: the URL names no file")
        return Path(rest)
    if "://" in text:
        raise StoreError(f"--state {text!r}: unsupported store; use sqlite:///path or a file path")
    return Path(text)
