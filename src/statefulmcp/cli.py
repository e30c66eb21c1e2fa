"""`statefulmcp serve ...`: load components and serve them over streamable HTTP or stdio."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from statefulmcp.components import ComponentError
from statefulmcp.host import Host
from statefulmcp.state import StoreError, store_path
from statefulmcp.transport.http import Readiness, build_app, serve_http
from statefulmcp.transport.server import McpFrontend

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
        "--state",
        default=None,
        metavar="URL",
        help="durable state: sqlite:///relative/path, sqlite:////absolute/path or a path "
        "(default ./.statefulmcp/state.db)",
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
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _configure_logging(level: str) -> None:
    # Always stderr: in stdio mode stdout carries the protocol.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


async def _load(host: Host, paths: list[Path]) -> None:
    for path in paths:
        names = await host.load(path)
        log.info("loaded %s from %s", ", ".join(names), path)


async def _serve_stdio(host: Host, frontend: McpFrontend, drain_timeout: float) -> None:
    from mcp.server.stdio import stdio_server

    await host.activate_eager()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with stdio_server() as (read, write):
        serving = asyncio.create_task(
            frontend.server.run(read, write, frontend.server.create_initialization_options())
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await host.drain(drain_timeout)
        serving.cancel()
        stopping.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)


async def _serve(args: argparse.Namespace) -> int:
    try:
        host = Host(
            state=store_path(args.state), sync=args.durability, max_call_seconds=args.max_call_seconds or None
        )
        host.start()
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        await _load(host, args.paths)
    except ComponentError as exc:
        log.error("cannot start: %s", exc)
        await host.aclose()
        return 2
    frontend = McpFrontend(host, allow_load=args.allow_load)
    try:
        if args.stdio:
            await _serve_stdio(host, frontend, args.drain_timeout)
        else:
            readiness = Readiness()
            bind_host, port = args.http
            app = build_app(frontend, readiness, bind_host=bind_host)

            async def started(url: str) -> None:
                log.info("serving on %s", url)
                activated = await host.activate_eager()
                if activated:
                    log.info("eagerly activated %d instances", activated)
                readiness.ready = True

            async def stopping() -> None:
                readiness.draining = True
                await host.drain(args.drain_timeout)

            await serve_http(
                app,
                bind_host,
                port,
                log_level=args.log_level,
                on_started=started,
                on_stop=stopping,
            )
    finally:
        await host.aclose()
        log.info("stopped cleanly")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    if args.allow_load is not None and not args.allow_load.is_dir():
        log.error("--allow-load %s: not a directory", args.allow_load)
        raise SystemExit(2)
    # uvloop makes the transport loop (HTTP parsing, SSE framing) markedly cheaper per call.
    raise SystemExit(uvloop.run(_serve(args)))


if __name__ == "__main__":
    main()
