"""`self.state`: one instance's durable mapping, with the writes of the current turn tracked.

The view holds the committed values plus whatever the running turn wrote, so reads see the
instance's own writes at once. It remembers the value each written name had before the turn, so
a turn that raises (or whose commit fails) is rolled back and the view again matches the store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from statefulmcp._errors import StateValueError
from statefulmcp.state import DELETED

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""Compact, strict JSON; one encoder for every commit (`json.dumps` with options builds one per call)."""


def _encode(value: Any) -> str:
    """`value` as JSON text. A plain int (a counter: the most common state there is) skips the
    encoder, which builds its C scanner afresh on every call."""
    if type(value) is int:
        return str(value)
    return _encoder.encode(value)


__all__ = ["NoState", "StateValueError", "StateView"]


_MISSING: Any = object()


class StateView(MutableMapping[str, Any]):
    """A mapping of string keys to JSON values, scoped to one instance.

    Assign to persist: mutating a list or dict stored here in place is not seen as a write;
    `self.state["items"] = items` is.
    """

    __slots__ = ("_before", "_data", "_on_change")

    def __init__(
        self, data: dict[str, Any] | None = None, *, on_change: Callable[[], None] | None = None
    ) -> None:
        self._data: dict[str, Any] = data if data is not None else {}
        self._before: dict[str, Any] = {}
        self._on_change = on_change

    @classmethod
    def from_rows(cls, rows: dict[str, str], *, on_change: Callable[[], None] | None = None) -> StateView:
        """A view of committed rows (name -> JSON text), skipping the host's own markers."""
        data = {name: json.loads(text) for name, text in rows.items() if not name.startswith("\x00")}
        return cls(data, on_change=on_change)

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"StateView({self._data!r})"

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in self._data and (
            not isinstance(name, str) or name.startswith("\x00") or not _encodable(name)
        ):
            raise StateValueError(
                f"self.state keys are valid Unicode strings not starting with NUL, not {name!r}"
            )
        if name not in self._before:
            self._before[name] = self._data.get(name, _MISSING)
        self._data[name] = value
        if self._on_change is not None:
            self._on_change()

    def __delitem__(self, name: str) -> None:
        if name not in self._data:
            raise KeyError(name)
        if name not in self._before:
            self._before[name] = self._data[name]
        del self._data[name]
        if self._on_change is not None:
            self._on_change()

    @property
    def dirty(self) -> bool:
        return bool(self._before)

    def changes(self) -> dict[str, Any]:
        """The turn's writes as name -> JSON text (or `DELETED`); raises `StateValueError`."""
        out: dict[str, Any] = {}
        for name in self._before:
            if name not in self._data:
                out[name] = DELETED
                continue
            try:
                out[name] = _encode(self._data[name])
            except (TypeError, ValueError) as exc:
                raise StateValueError(
                    f"self.state[{name!r}] holds a {type(self._data[name]).__name__}, which is not JSON "
                    f"({exc}); nothing of this turn was written. Store JSON values: dict, list, str, "
                    "int, float, bool or None"
                ) from None
        return out

    def committed(self) -> dict[str, Any]:
        """The values as last committed: what the running turn (or a plain background loop) wrote
        since is left out, so a reader outside the turn never sees it half done."""
        data = dict(self._data)
        for name, old in self._before.items():
            if old is _MISSING:
                data.pop(name, None)
            else:
                data[name] = old
        return data

    def accept(self) -> None:
        """The turn's writes are committed: forget what they replaced."""
        self._before.clear()

    def rollback(self) -> None:
        """Undo the turn's writes, so the view matches the committed state again."""
        for name, old in self._before.items():
            if old is _MISSING:
                self._data.pop(name, None)
            else:
                self._data[name] = old
        self._before.clear()


def _encodable(text: str) -> bool:
    """False for a string with a lone surrogate, which no store can write as text."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class NoState(StateView):
    """`self.state` of a stateless component: empty, and a write is an error, never a silent drop."""

    __slots__ = ("_component",)

    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def __setitem__(self, name: str, value: Any) -> None:
        raise StateValueError(
            f"component {self._component!r} is stateless, so self.state is not kept between calls and "
            "this write would be lost; declare @component(stateful=True) to keep state"
        )

    def __delitem__(self, name: str) -> None:
        self.__setitem__(name, None)
