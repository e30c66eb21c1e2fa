"""Calls a tool on a server that requires a bearer token, with and without one."""

import os
from collections.abc import Awaitable, Callable
from typing import Any

from statefulmcp import Remote, Stateful, component, tool

REMOTE_URL = os.environ.get("REMOTE_URL", "http://127.0.0.1:9/mcp")


@component(
    stateful=True,
    durability="memory",
    uses={
        "with_token": Remote(REMOTE_URL, "text_word_count", token_env="REMOTE_TOKEN"),
        "without_token": Remote(REMOTE_URL, "text_word_count"),
    },
)
class AuthCaller(Stateful):
    with_token: Callable[..., Awaitable[Any]]  # given by `uses=`
    without_token: Callable[..., Awaitable[Any]]

    @tool
    async def count(self, text: str, token: bool) -> int:
        call = self.with_token if token else self.without_token
        return int(await call(text=text))
