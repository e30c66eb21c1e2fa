"""Imports `base` by its plain name: a second copy of base.py if the host loaded it too."""

import base  # type: ignore[import-not-found]

from statefulmcp import component, tool


@component
class User:
    @tool
    async def note(self) -> int:
        base.SEEN.append("x")
        return len(base.SEEN)
