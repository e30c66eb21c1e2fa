"""A TCP proxy in front of PostgreSQL that the checker can cut: one replica's only way to its database.

The `cut` fault needs a replica that its clients still reach while it cannot reach PostgreSQL.
Only that replica connects through the proxy (its `--state` names the proxy), so the others and
the checker's own queries are untouched. `cut()` aborts every open connection (both directions
at once, as a failed link or a firewall reset does) and refuses new ones until `heal()`.

It runs its own event loop on a thread of its own: the checker's loop blocks at times (a
`pg_ctl`, a query), and a proxy that stalled with it would be a fault nobody asked for. It
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

_CHUNK = 65536


class Proxy:
    """Forwards 127.0.0.1:`port` to `upstream` ((host, port), or a unix socket path)."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.port = 0
        self.cuts = 0
        self._cut = False
        self._open: set[asyncio.WriteTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="statefulmcp-checker-proxy", daemon=True
        )
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=30)

    def cut(self) -> None:
        """Abort every connection through the proxy and refuse new ones."""
        self._run(self._abort_all())

    def heal(self) -> None:
        """Accept and forward connections again (the replica reconnects by itself)."""
        self._cut = False

    async def _abort_all(self) -> None:
        self._cut = True
        self.cuts += 1
        for transport in list(self._open):
            transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.transport
        if self._cut:
            client.abort()
            return
        try:
            if isinstance(self.upstream, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client.abort()
            return
        upstream = up_writer.transport
        if self._cut:  # cut while connecting
            client.abort()
            upstream.abort()
            return
        pair = {client, upstream}
        self._open |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for transport in pair:
                self._open.discard(transport)
                transport.abort()

    def close(self) -> None:
        async def stop() -> None:
            await self._abort_all()
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until either side ends; an aborted or reset side ends both (the caller aborts them)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while True:
            data = await source.read(_CHUNK)
            if not data:
                break
            sink.write(data)
            await sink.drain()
    sink.transport.abort()
