"""The host's own tools: `list_components`, and with `--allow-load DIR`, `load_component`,
`unload_component`, and `grant_permissions` / `revoke_permissions` (a loaded WebAssembly
component's grants, changed at run time; see `wasm.grants`). They are ordinary tool-table
entries, validated against the schema they publish: a string where a boolean belongs
(`"purge": "false"`) is refused, never coerced.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mcp_types import CallToolResult

from statefulmcp._confined import Refused, read_confined
from statefulmcp._errors import ComponentError, ToolCallError, ToolInputError
from statefulmcp._options import options_from, options_schema
from statefulmcp._tools import HostTool
from statefulmcp.components import ToolSpec, tool_result_text
from statefulmcp.host import Host
from statefulmcp.wasm import grants

ADMIN_TOOLS = frozenset({"load_component", "unload_component", "grant_permissions", "revoke_permissions"})
"""The tools that change what the server runs; with authentication on they need the admin scope."""

log = logging.getLogger("statefulmcp.admin")

caller_is_admin: ContextVar[bool] = ContextVar("statefulmcp_caller_is_admin", default=False)
"""Set by the transport per call: whether the caller may see the server's file paths."""


def _redacted(component: dict[str, Any]) -> dict[str, Any]:
    """A listing without the host's file system: file names instead of paths, no host directories."""
    details = dict(component.get("details") or {})
    if details.get("policy"):
        details["policy"] = Path(details["policy"]).name
    if "dirs" in details:
        details["dirs"] = [{k: v for k, v in d.items() if k != "host"} for d in details["dirs"]]
    config = details.get("config")
    if isinstance(config, dict) and config.get("secrets_file"):
        details["config"] = {**config, "secrets_file": Path(config["secrets_file"]).name}
    if component.get("handles") and isinstance(details.get("background"), dict):
        # Handles and session keys are bearer secrets: their owners know them, nobody else may.
        details["background"] = {
            method: {
                **stats,
                "instances": [{k: v for k, v in i.items() if k != "key"} for i in stats["instances"]],
            }
            if isinstance(stats, dict) and "instances" in stats
            else stats
            for method, stats in details["background"].items()
        }
    return {**component, "source": Path(component["source"]).name, "details": details}


def _redacted_replica(replica: dict[str, Any], secret: set[str]) -> dict[str, Any]:
    """The replica view without the keys of components whose keys are handles or sessions."""
    owned = {name: keys if name not in secret else len(keys) for name, keys in replica["owned"].items()}
    return {**replica, "owned": owned}


def _redacted_failure(failure: dict[str, str]) -> dict[str, str]:
    """A load failure without the host's file system: the file name, in the source and the error."""
    source = failure["source"]
    return {"source": Path(source).name, "error": failure["error"].replace(source, Path(source).name)}


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> ToolSpec:
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        for field in arguments:
            if field not in properties:
                raise ToolInputError(
                    f"{field}: unknown argument; this tool takes {', '.join(properties) or 'none'}"
                )
        for field in required:
            if field not in arguments:
                raise ToolInputError(f"{field}: required")
        for field, value in arguments.items():
            _check_type(field, value, properties[field])
        return arguments

    return ToolSpec(
        name=name,
        description=description,
        input_schema=schema,
        output_schema=None,
        validate=validate,
        call=_unused,
        is_async=True,
        to_result=_same,
    )


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "null": type(None),
    "array": list,
    "object": dict,
}


def _check_type(field: str, value: Any, prop: dict[str, Any]) -> None:
    kinds = prop.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not any(isinstance(value, _JSON_TYPES[k]) for k in kinds):
        raise ToolInputError(f"{field}: expected {' or '.join(kinds)}, got {json.dumps(value)[:40]}")
    if "enum" in prop and value not in prop["enum"]:
        raise ToolInputError(f"{field}: expected one of {prop['enum']}, got {value!r}")


def _unused(instance: Any, arguments: dict[str, Any]) -> Any:
    raise AssertionError("host tools run their own body")


def _same(value: Any) -> Any:
    return value


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    result = tool_result_text(text)
    result.structured_content = structured
    return result


def admin_tools(host: Host, allow_load: Path | None) -> list[HostTool]:
    """The admin tools to serve: listing always, loading only inside `allow_load`."""

    async def list_components(arguments: dict[str, Any]) -> CallToolResult:
        components = [asdict(info) for info in host.list()]
        if not caller_is_admin.get():
            components = [_redacted(c) for c in components]
        structured: dict[str, Any] = {"components": components}
        failed = [asdict(failure) for failure in host.failed()]
        if failed:
            structured["failed"] = failed if caller_is_admin.get() else [_redacted_failure(f) for f in failed]
        health = host.health()
        if health is not None:
            structured["health"] = health
        replica = await host.replica_view()
        if replica is not None and not caller_is_admin.get():
            replica = _redacted_replica(replica, {c["name"] for c in components if c["handles"]})
        if replica is not None:
            structured["replica"] = replica
        shown = structured if failed or replica is not None else components
        return _result(json.dumps(shown, indent=2, default=str), structured)

    tools = [
        HostTool(
            _spec(
                "list_components",
                "List the loaded components: name, source, stateful, key, tools, live instances and health; "
                "under 'failed', the files the server could not load (--serve-what-loads), with why; and "
                "with replicas, under 'replica', this replica, the live ones and the keys it owns.",
                {},
                [],
            ),
            list_components,
        )
    ]
    if allow_load is not None:
        tools += _loading_tools(host, allow_load.resolve())
    return tools


def _loading_tools(host: Host, root: Path) -> list[HostTool]:
    async def load_component(arguments: dict[str, Any]) -> CallToolResult:
        path = arguments["path"]
        try:
            options = options_from({k: v for k, v in arguments.items() if k != "path"})
            # Resolved once, without following symlinks, and read from the checked descriptors;
            # the load uses these bytes and never the path (see `_confined`).
            files, directory = await asyncio.to_thread(read_confined, root, path)
        except Refused as exc:
            raise ToolCallError(str(exc)) from None
        except ComponentError as exc:
            raise ToolCallError(f"load failed: {exc}") from None
        if directory and options is not None and options.name:
            raise ToolCallError(f"load failed: {path}: a load-time name fits one component, not a directory")
        try:
            names = await host.load_all(files, options)
        except ComponentError as exc:
            raise ToolCallError(f"load failed: {exc}") from None
        tools = [t for info in host.list() if info.name in names for t in info.tools]
        return _result(
            f"loaded {', '.join(names)}: {', '.join(tools)}", {"components": names, "tools": tools}
        )

    async def unload_component(arguments: dict[str, Any]) -> CallToolResult:
        name = arguments["name"]
        try:
            await host.unload(name, purge=arguments.get("purge", False))
        except ComponentError as exc:
            raise ToolCallError(f"unload failed: {exc}") from None
        return _result(f"unloaded {name}", {"unloaded": name})

    load_spec = _spec(
        "load_component",
        "Load a component file (.py or .wasm) from the server's --allow-load directory. Loading a name "
        "that is already loaded replaces it; its instances start fresh.",
        {
            "path": {"type": "string", "description": "file path, relative to the allowed directory"},
            **options_schema(),
        },
        ["path"],
    )
    unload_spec = _spec(
        "unload_component",
        "Unload a component: its tools go away and its in-memory instances are dropped.",
        {
            "name": {"type": "string"},
            "purge": {"type": "boolean", "default": False, "description": "also delete its durable state"},
        },
        ["name"],
    )
    return [
        HostTool(load_spec, load_component),
        HostTool(unload_spec, unload_component),
        *_permission_tools(host, root),
    ]


def _permission_tools(host: Host, root: Path) -> list[HostTool]:
    def grants_of(name: str) -> grants.Grants:
        found = host.permissions(name)
        assert isinstance(found, grants.Grants)
        return found

    def shown(details: dict[str, Any]) -> dict[str, Any]:
        return details if caller_is_admin.get() else _redacted({"source": "", "details": details})["details"]

    async def grant_permissions(arguments: dict[str, Any]) -> CallToolResult:
        name = arguments["component"]
        try:
            change = await asyncio.to_thread(grants.grant_from, arguments, root)
            if not change:
                raise ComponentError("nothing to grant: name env, dirs, network, config or config_env")
            policy = grants_of(name).grant(change)
        except ComponentError as exc:
            raise ToolCallError(f"grant failed: {exc}") from None
        log.info("granted %s at run time: %s", name, _listed(arguments))
        return _result(
            f"granted {name}: {_listed(arguments)}. Instances made from now on have it; live instances keep "
            "the grants they were made with.",
            {"component": name, "granted": _listed(arguments), "details": shown(policy.describe())},
        )

    async def revoke_permissions(arguments: dict[str, Any]) -> CallToolResult:
        name = arguments["component"]
        try:
            change = grants.revoke_from(arguments)
            if not change:
                raise ComponentError("nothing to revoke: name env, dirs, network or config")
            policy = grants_of(name).revoke(change)
            dropped = await host.drop_instances(name, "its grants were revoked")
        except ComponentError as exc:
            raise ToolCallError(f"revoke failed: {exc}") from None
        log.info("revoked %s at run time: %s", name, _listed(arguments))
        lost = (
            f" Dropped its {len(dropped)} live instance(s), which held the old grants: their in-memory "
            "state was lost; the next call starts a fresh instance."
            if dropped
            else ""
        )
        return _result(
            f"revoked {name}: {_listed(arguments)}.{lost}",
            {
                "component": name,
                "revoked": _listed(arguments),
                "dropped_instances": len(dropped),
                "details": shown(policy.describe()),
            },
        )

    note = " The policy file is not rewritten: a reload or a restart starts again from it."
    return [
        HostTool(
            _spec(
                "grant_permissions",
                "Widen a loaded WebAssembly component's grants: environment variables, directories (inside "
                "the --allow-load directory), network hosts, wasi:config values. Instances made after the "
                "grant have it; live ones keep theirs." + note,
                grants.GRANT_PROPERTIES,
                ["component"],
            ),
            grant_permissions,
        ),
        HostTool(
            _spec(
                "revoke_permissions",
                "Narrow a loaded WebAssembly component's grants. Takes effect at once: its live instances "
                "are dropped (their in-memory state is lost)." + note,
                grants.REVOKE_PROPERTIES,
                ["component"],
            ),
            revoke_permissions,
        ),
    ]


def _listed(arguments: dict[str, Any]) -> dict[str, Any]:
    """What a grant or revoke named, without config values (they may be secrets)."""
    listed = {k: v for k, v in arguments.items() if k != "component"}
    if isinstance(listed.get("config"), dict):
        listed["config"] = sorted(listed["config"])
    return listed
