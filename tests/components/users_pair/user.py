"""Imports `base` by its plain name: a second copy of base.py if the host loaded it too."""

import base  # type: ignore[import-not-found]

from statefulmcp import Stateful, component, tool


@component
class User(Stateful):
    @tool
    async def note(self) -> int:
        base.SEEN.append("x")
        return len(base.SEEN)
