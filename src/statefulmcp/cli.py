"""`statefulmcp serve ...`: argument parsing only; the server's life cycle is `transport/lifespan.py`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop

from statefulmcp.cluster import DEFAULT_LEASE_SECONDS
from statefulmcp.host import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_WAITERS
from statefulmcp.transport.events import EventBounds
from statefulmcp.transport.http import HttpLimits
from statefulmcp.transport.lifespan import ServeOptions, finish, serve
from statefulmcp.transport.questions import ANSWER_TIMEOUT, MAX_QUESTIONS

log = logging.getLogger("statefulmcp")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statefulmcp", description="Serve components as MCP tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="load components and serve their tools")
    serve.add_argument("paths", nargs="*", type=Path, help="Python files, .wasm files or directories of them")
    serve.add_argument(
        "--http",
        type=_host_port,
        default=("127.0.0.1", 8000),
        metavar="HOST:PORT",
        help="serve streamable HTTP at http://HOST:PORT/mcp (default 127.0.0.1:8000; port 0 picks a free one)",
    )
    serve.add_argument("--stdio", action="store_true", help="serve MCP over stdin/stdout instead of HTTP")
    serve.add_argument(
        "--allow-load",
        type=Path,
        metavar="DIR",
        help="enable the load_component/unload_component tools for files inside DIR (off by default: "
        "loading a component runs its code)",
    )
    serve.add_argument(
        "--serve-what-loads",
        action="store_true",
        help="serve the components that load even when others do not: each failure is logged, listed "
        "by list_components under 'failed' and named by /ready (200, status 'degraded'). Without it, a "
        "component that does not load stops the server (exit code 2)",
    )
    serve.add_argument(
        "--state",
        default=None,
        metavar="URL",
        help="durable state: sqlite:///relative/path, sqlite:////absolute/path or a path "
        "(default ./.statefulmcp/state.db), or postgresql://user@host/db: replicas sharing one "
        "PostgreSQL serve the same components with one owner per key (docs/scaling.md)",
    )
    serve.add_argument(
        "--durability",
        choices=["os", "process"],
        default="os",
        help="os (default): a commit survives kill -9 and an OS crash (fsync, synchronous=FULL); "
        "process: it survives kill -9 only (synchronous=NORMAL), and commits are cheaper",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long in-flight calls may run before shutdown (default 10)",
    )
    serve.add_argument(
        "--max-call-seconds",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="cap on every tool call (default 300); @tool(timeout=...) can lower it per tool",
    )
    serve.add_argument(
        "--idle-seconds",
        type=_off_or_positive(float),
        default=DEFAULT_IDLE_SECONDS,
        metavar="SECONDS",
        help="passivate an instance of a durable component after this long without a call: on_deactivate "
        "runs, its state is committed and its memory freed; the next call activates it again (default "
        "600; 0: never). A component's own idle_seconds wins",
    )
    serve.add_argument(
        "--max-instances",
        type=_off_or_positive(int),
        default=DEFAULT_MAX_INSTANCES,
        metavar="N",
        help="live stateful instances kept at most, all components together; past it the least recently "
        "used idle one is passivated (default 100000; 0: no bound)",
    )
    serve.add_argument(
        "--max-waiters",
        type=_off_or_positive(int),
        default=DEFAULT_MAX_WAITERS,
        metavar="N",
        help="calls parked in wait_until (long-polls) on one instance, at most; past it a new one is refused "
        "with an error (default 10000; 0: no bound)",
    )
    serve.add_argument(
        "--answer-timeout",
        type=_positive(float),
        default=ANSWER_TIMEOUT,
        metavar="SECONDS",
        help="how long a tool's question to its client (ctx.elicit, ctx.sample) waits for the answer; "
        "then the question fails with an error the tool can handle (default 600)",
    )
    serve.add_argument(
        "--max-questions",
        type=_positive(int),
        default=MAX_QUESTIONS,
        metavar="N",
        help="questions to clients (elicitation, sampling) open at once, all calls together; past it a "
        "new one is refused with an error (default 1000)",
    )
    replicas = serve.add_argument_group("replicas (with --state postgresql://...); see docs/scaling.md")
    replicas.add_argument(
        "--lease-seconds",
        type=_positive(float),
        default=DEFAULT_LEASE_SECONDS,
        metavar="SECONDS",
        help="a replica that has not renewed its lease for this long is dead to the others, which "
        "take its keys over (default 2); it renews every third of it",
    )
    replicas.add_argument(
        "--audit-commits",
        action="store_true",
        help="also record every commit's (component, key, replica, epoch) in statefulmcp_commits, "
        "for the fault-injection checker",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG, INFO (default), WARNING or ERROR, in any case",
    )
    access = serve.add_argument_group("who may connect (HTTP); see docs/security.md")
    access.add_argument(
        "--advertise",
        metavar="URL",
        help="the URL clients use to reach this server (e.g. https://tools.example.com/mcp); its host is "
        "accepted in Host/Origin headers and it names the resource in the OAuth metadata",
    )
    access.add_argument(
        "--allowed-hosts",
        type=_words,
        action="extend",
        default=[],
        metavar="HOST[:PORT],...",
        help="more Host header values to accept ('name:*' for any port; '*' turns Host/Origin checks off, "
        "only behind a proxy that checks them). Loopback names and the bound address are always accepted",
    )
    access.add_argument(
        "--allowed-origins",
        type=_words,
        action="extend",
        default=[],
        metavar="ORIGIN,...",
        help="more Origin header values to accept (http(s):// of every allowed host is accepted already)",
    )
    access.add_argument(
        "--auth-token-file",
        type=Path,
        metavar="FILE",
        help="require a bearer token from FILE: one per line, 'TOKEN [SCOPE ...]'; scopes "
        "statefulmcp:call (the default) and statefulmcp:admin. $STATEFULMCP_AUTH_TOKEN adds one token "
        "with both",
    )
    access.add_argument(
        "--auth-verifier",
        metavar="MODULE:ATTR",
        help="require OAuth bearer tokens checked by this TokenVerifier (mcp.server.auth.provider)",
    )
    access.add_argument(
        "--auth-issuer",
        metavar="URL",
        help="with --auth-verifier: the authorization server clients get tokens from (served in the "
        "protected-resource metadata)",
    )
    limits = serve.add_argument_group("bounds on connections (HTTP)")
    bounds = HttpLimits()  # the defaults
    limits.add_argument(
        "--max-connections",
        type=_positive(int),
        default=bounds.max_connections,
        metavar="N",
        help=f"open connections beyond N get 503 at once (default {bounds.max_connections})",
    )
    limits.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=bounds.header_timeout,
        metavar="SECONDS",
        help="a request whose headers are not complete this long after its first byte gets 408 "
        f"(default {bounds.header_timeout:g}); headers are also capped at "
        f"{bounds.max_headers} fields and {bounds.max_header_bytes // 1024} KiB (431)",
    )
    limits.add_argument(
        "--max-sessions",
        type=_positive(int),
        default=bounds.max_sessions,
        metavar="N",
        help="open 2025-11-25 sessions; beyond N the least recently used idle one is closed, and with "
        f"none idle a new one gets 503 (default {bounds.max_sessions})",
    )
    limits.add_argument(
        "--max-sessions-per-client",
        type=_positive(int),
        default=bounds.max_sessions_per_client,
        metavar="N",
        help="sessions one client (a token, or an address without authentication) may hold; beyond N "
        f"its least recently used idle one is closed (default {bounds.max_sessions_per_client})",
    )
    limits.add_argument(
        "--session-idle-timeout",
        type=_positive(float),
        default=bounds.session_idle_timeout,
        metavar="SECONDS",
        help="close a session after this long without a request "
        f"(default {bounds.session_idle_timeout:g}); its client gets 404 and starts a new one",
    )
    kept = bounds.events
    limits.add_argument(
        "--max-events",
        type=_positive(int),
        default=kept.max_events,
        metavar="N",
        help="SSE events kept in memory for 2025-11-25 clients that resume a dropped stream "
        f"(Last-Event-ID), all sessions together; beyond N the oldest goes (default {kept.max_events})",
    )
    limits.add_argument(
        "--max-events-per-stream",
        type=_positive(int),
        default=kept.max_per_stream,
        metavar="N",
        help=f"events kept for one response stream; beyond N its oldest goes (default {kept.max_per_stream})",
    )
    limits.add_argument(
        "--event-retention-seconds",
        type=_positive(float),
        default=kept.retention_seconds,
        metavar="SECONDS",
        help="events older than this are dropped; a client resuming from one gets an error saying its "
        f"call's result is lost (default {kept.retention_seconds:g})",
    )
    return parser


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
        return number

    return parse


def _off_or_positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """A positive number, or 0 for "off"."""
    positive = _positive(kind)

    def parse(value: str) -> float:
        return 0 if value.strip() in ("0", "0.0") else positive(value)

    return parse


def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


def _configure_logging(level: str) -> None:
    # Always stderr: in stdio mode stdout carries the protocol.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    if args.allow_load is not None and not args.allow_load.is_dir():
        log.error("cannot start: --allow-load %s: not a directory", args.allow_load)
        raise SystemExit(2)
    options = ServeOptions(
        paths=args.paths,
        http=args.http,
        stdio=args.stdio,
        allow_load=args.allow_load,
        serve_what_loads=args.serve_what_loads,
        state=args.state,
        durability=args.durability,
        drain_timeout=args.drain_timeout,
        max_call_seconds=args.max_call_seconds or None,
        log_level=args.log_level,
        advertise=args.advertise,
        allowed_hosts=args.allowed_hosts,
        allowed_origins=args.allowed_origins,
        auth_token_file=args.auth_token_file,
        auth_verifier=args.auth_verifier,
        auth_issuer=args.auth_issuer,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        max_sessions=args.max_sessions,
        max_sessions_per_client=args.max_sessions_per_client,
        session_idle_timeout=args.session_idle_timeout,
        events=EventBounds(
            max_events=int(args.max_events),
            max_per_stream=int(args.max_events_per_stream),
            retention_seconds=args.event_retention_seconds,
        ),
        lease_seconds=args.lease_seconds,
        audit_commits=args.audit_commits,
        idle_seconds=args.idle_seconds or None,
        max_instances=int(args.max_instances) or None,
        max_waiters=int(args.max_waiters) or None,
        answer_timeout=args.answer_timeout,
        max_questions=args.max_questions,
    )
    # uvloop makes the transport loop (HTTP parsing, SSE framing) markedly cheaper per call.
    finish(uvloop.run(serve(options)))


if __name__ == "__main__":
    main()
