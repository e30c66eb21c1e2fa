"""The tool table: full tool name -> the entry that runs it.

Component tools, handle tools (`<name>_open` / `<name>_close`) and the host's own tools (the
admin tools) are all ordinary entries with the same two parts: a `ToolSpec` (schema, argument
validation, result conversion) and `run(arguments, finish)`. The host resolves a name once per
call and never asks what kind of entry it got. The table is immutable and replaced whole on
every load or unload, so the transport thread reads it without a lock while the engine changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from statefulmcp._errors import ComponentError
from statefulmcp.components import ToolSpec

if TYPE_CHECKING:
    from statefulmcp.engine import Engine
    from statefulmcp.live import LiveComponent

Finish = Callable[[Any], Any]
"""Converts a tool's return value inside its turn: to an MCP result, or a private copy."""


class Entry(Protocol):
    """One tool the host serves."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def component(self) -> LiveComponent | None: ...

    def run(self, arguments: dict[str, Any], finish: Finish, session: str | None = None) -> Awaitable[Any]:
        """Run the tool with validated arguments; `finish` converts the value before it leaves.

        `session` is the key of the caller's MCP session, for per-session components.
        """
        ...


@dataclass(frozen=True, slots=True)
class ComponentTool:
    """A tool of a component, run as a turn of its instance (or on a fresh stateless object)."""

    spec: ToolSpec
    component: LiveComponent
    engine: Engine

    def run(self, arguments: dict[str, Any], finish: Finish, session: str | None = None) -> Awaitable[Any]:
        live = self.component
        if not live.spec.stateful and not self.spec.is_async:
            # A stateless sync body needs no instance and no engine: straight to a worker thread.
            return live.call_here(self.spec, arguments, finish)
        return self.engine.run(lambda: live.call(self.spec, arguments, finish, session))


@dataclass(frozen=True, slots=True)
class EngineTool:
    """A tool the host makes for a component (handles), run on the engine loop."""

    spec: ToolSpec
    component: LiveComponent
    engine: Engine
    body: Callable[[LiveComponent, dict[str, Any]], Coroutine[Any, Any, Any]]

    async def run(self, arguments: dict[str, Any], finish: Finish, session: str | None = None) -> Any:
        live = self.component
        return finish(await self.engine.run(lambda: self.body(live, arguments)))


@dataclass(frozen=True, slots=True)
class HostTool:
    """A tool of the host itself (an admin tool), run on the caller's loop."""

    spec: ToolSpec
    body: Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]

    @property
    def component(self) -> LiveComponent | None:
        return None

    async def run(self, arguments: dict[str, Any], finish: Finish, session: str | None = None) -> Any:
        return finish(await self.body(arguments))


class ToolTable(Mapping[str, Entry]):
    """An immutable map of full tool names to entries; changes make a new table."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[str, Entry] | None = None) -> None:
        self._entries: dict[str, Entry] = dict(entries or {})

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def without(self, components: set[str]) -> ToolTable:
        """This table less every entry of the named components."""
        return ToolTable(
            {
                n: e
                for n, e in self._entries.items()
                if e.component is None or e.component.name not in components
            }
        )

    def adding(self, entries: dict[str, Entry], source: str) -> ToolTable:
        """This table plus `entries`; a name already served is refused and nothing changes."""
        for name in entries:
            if name in self._entries:
                raise ComponentError(
                    f"tool {name!r} of {source} is already served by {_owner(self._entries[name])}; "
                    "nothing was loaded. Rename one of them"
                )
        return ToolTable({**self._entries, **entries})

    def of(self, component: LiveComponent) -> list[str]:
        return [n for n, e in self._entries.items() if e.component is component]


def _owner(entry: Entry) -> str:
    live = entry.component
    return "the host" if live is None else f"component {live.name!r} ({live.spec.source})"
