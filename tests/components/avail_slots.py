"""A component that fills its share of worker threads, and another that needs one."""

import threading

from statefulmcp import Stateful, component, tool

GATE = threading.Event()


@component
class Hog(Stateful):
    @tool
    def hold(self) -> int:
        GATE.wait(120)
        return 1

    @tool
    async def release(self) -> bool:
        GATE.set()
        return True


@component
class Bystander(Stateful):
    @tool
    def quick(self) -> int:
        return 2
