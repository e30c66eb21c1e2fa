"""Tools that raise SystemExit, KeyboardInterrupt or GeneratorExit, async and sync, stateful and stateless."""

import argparse
import asyncio

from statefulmcp import Stateful, component, tool

_spawned: set[asyncio.Task[None]] = set()


async def _exit_later() -> None:
    _bad_args()


def _bad_args() -> None:
    argparse.ArgumentParser(prog="tool").parse_args(["--nope"])


@component(stateful=True)
class Quitter(Stateful):
    @tool
    async def parse(self) -> int:
        _bad_args()
        return 0

    @tool
    def parse_sync(self) -> int:
        _bad_args()
        return 0

    @tool
    async def interrupt(self) -> int:
        raise KeyboardInterrupt

    @tool
    def interrupt_sync(self) -> int:
        raise KeyboardInterrupt

    @tool
    async def generator_exit(self) -> int:
        raise GeneratorExit

    @tool
    def generator_exit_sync(self) -> int:
        raise GeneratorExit

    @tool
    async def spawn_exit(self) -> int:
        """Starts a task of its own that raises SystemExit after this call has answered."""
        _spawned.add(asyncio.get_running_loop().create_task(_exit_later()))
        return 0

    @tool
    async def bump(self) -> int:
        count = int(self.state.get("count", 0)) + 1
        self.state["count"] = count
        return count


@component
class Leaver(Stateful):
    @tool
    async def parse(self) -> int:
        _bad_args()
        return 0

    @tool
    def parse_sync(self) -> int:
        _bad_args()
        return 0

    @tool
    async def interrupt(self) -> int:
        raise KeyboardInterrupt

    @tool
    def interrupt_sync(self) -> int:
        raise KeyboardInterrupt

    @tool
    def generator_exit_sync(self) -> int:
        raise GeneratorExit

    @tool
    def echo(self, text: str) -> str:
        return text
