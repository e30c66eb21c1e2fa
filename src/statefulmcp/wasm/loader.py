"""Loading a `.wasm` component as a `ComponentSpec`: one tool per exported function.

Tools come from the component's own type information: every exported function, including
those inside exported interfaces, becomes a tool named after the function (kebab-case to
snake_case). When two interfaces export the same name, each tool is prefixed with its
interface's name. Exports that toolchains add for themselves are not tools.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime
from mcp_types import CallToolResult, TextContent
from wasmtime import component as wc

from statefulmcp._confined import ComponentFile
from statefulmcp._errors import ToolCallError
from statefulmcp.components import (
    ComponentError,
    ComponentSpec,
    InstanceLost,
    LoadOptions,
    ToolInputError,
    ToolSpec,
    snake_case,
)
from statefulmcp.wasm import cache, calls, config, http, values
from statefulmcp.wasm import engine as engines
from statefulmcp.wasm.docs import package_docs
from statefulmcp.wasm.grants import Grants
from statefulmcp.wasm.instance import Blueprint, WasmInstance
from statefulmcp.wasm.policy import Policy, load_policy

_MAGIC = b"\0asm"


def _is_toolchain_internal(name: str, item: wc.ComponentInstanceType, eng: wasmtime.Engine) -> bool:
    """componentize-py exports an `exports` instance whose `init` it calls itself at build time."""
    return name == "exports" and "init" in item.exports(eng)


@dataclass(frozen=True, slots=True)
class _Export:
    """One exported function: where it is, what it is called, and its type."""

    qualified: str
    interface: str | None
    function: str
    index: wc.ExportIndex
    ty: wc.FuncType


def _exports(component: wc.Component, eng: wasmtime.Engine) -> Iterator[_Export]:
    for name, extern in component.type.exports(eng).items():
        item = extern.ty
        if isinstance(item, wc.FuncType):
            index = component.get_export_index(name)
            assert index is not None
            yield _Export(name, None, name, index, item)
        elif isinstance(item, wc.ComponentInstanceType) and not _is_toolchain_internal(name, item, eng):
            parent = component.get_export_index(name)
            assert parent is not None
            for inner, inner_extern in item.exports(eng).items():
                inner_item = inner_extern.ty
                if isinstance(inner_item, wc.FuncType):
                    index = component.get_export_index(inner, parent)
                    assert index is not None
                    yield _Export(f"{name}#{inner}", name, inner, index, inner_item)


def _interface_short(interface: str) -> str:
    """`statefulmcp:types/geo@1.0.0` -> `geo`."""
    return interface.rpartition("/")[2].partition("@")[0]


def _tool_names(exports: list[_Export]) -> list[str]:
    counts = Counter(snake_case(e.function) for e in exports)
    return [
        snake_case(f"{_interface_short(e.interface)}_{e.function}")
        if e.interface is not None and counts[snake_case(e.function)] > 1
        else snake_case(e.function)
        for e in exports
    ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _output_schema(codec: values.Codec | None) -> dict[str, Any] | None:
    """Records are sent as they are; any other value as `{"result": value}` (MCP wants an object)."""
    if codec is None:
        return None
    if values.is_object(codec):
        return codec.schema
    return {"type": "object", "properties": {"result": codec.schema}, "required": ["result"]}


def _done() -> CallToolResult:
    """The answer of a call that returns nothing (no result, or the `ok` of a `result<_, E>`).

    Empty content reads to a model as if nothing came back; "ok" says the call succeeded. There is
    no structured content: such a tool has no output schema, and MCP's structured content is an
    object, so it cannot be `null`.
    """
    return CallToolResult(content=[TextContent(type="text", text="ok")])


def _converter(codec: values.Codec | None) -> tuple[Callable[[Any], CallToolResult], dict[str, Any] | None]:
    """The result converter and output schema of a function returning `codec` (None: nothing)."""

    def plain(value_codec: values.Codec | None, value: Any) -> CallToolResult:
        if value_codec is None:
            return _done()
        lifted = value_codec.lift(value)
        structured = lifted if values.is_object(value_codec) else {"result": lifted}
        return CallToolResult(
            content=[TextContent(type="text", text=_text(lifted))], structured_content=structured
        )

    if codec is not None and values.is_result(codec):
        result_codec = codec

        def to_result(value: Any) -> CallToolResult:
            ok, payload_codec, payload = values.split_result(result_codec, value)
            if ok:
                return plain(payload_codec, payload)
            error = None if payload_codec is None else payload_codec.lift(payload)
            return CallToolResult(
                content=[TextContent(type="text", text="error" if error is None else _text(error))],
                structured_content={"error": error},
                is_error=True,
            )

        return to_result, _output_schema(values.result_ok(result_codec))

    return (lambda value: plain(codec, value)), _output_schema(codec)


def _tool(name: str, export: _Export, source: Path, described: str | None) -> ToolSpec:
    params = [(param, values.codec_for(ty)) for param, ty in export.ty.params]
    result_codec = None if export.ty.result is None else values.codec_for(export.ty.result)
    to_result, output_schema = _converter(result_codec)
    refusable = result_codec if result_codec is not None and values.is_result(result_codec) else None
    names = [param for param, _ in params]
    known = frozenset(names)

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        lowered: dict[str, Any] = {}
        try:
            for param, codec in params:
                if param not in arguments and not values.is_optional(codec):
                    raise values.Invalid(param, "missing required argument")
                lowered[param] = codec.lower(arguments.get(param), param)
        except values.Invalid as exc:
            raise ToolInputError(f"field {exc.path!r}: {exc.problem}") from None
        if not set(arguments) <= known:
            extra = sorted(set(arguments) - known)[0]
            raise ToolInputError(f"field {extra!r}: unknown argument")
        return lowered

    def call(instance: WasmInstance, arguments: dict[str, Any]) -> Any:
        value = instance.call(export.qualified, export.index, [arguments[param] for param in names])
        if refusable is not None and instance.refused:
            ok, payload_codec, payload = values.split_result(refusable, value)
            error = "error" if ok or payload_codec is None else _text(payload_codec.lift(payload))
            if not ok and calls.unsaid(instance.refused, error):
                # The guest's error does not say why (componentize-js's fetch() drops a refusal's
                # message): the call fails with the guest's error and the host's refusals.
                raise ToolCallError(calls.told(instance.refused, error))
        return value

    return ToolSpec(
        name=name,
        description=described
        or f"`{export.qualified}`, exported by the WebAssembly component {source.name}.",
        input_schema={
            "type": "object",
            "properties": {param: values.property_schema(codec) for param, codec in params},
            "required": [param for param, codec in params if not values.is_optional(codec)],
            "additionalProperties": False,
        },
        output_schema=output_schema,
        validate=validate,
        call=call,
        is_async=False,
        to_result=to_result,
    )


def _read(path: Path) -> bytes:
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ComponentError(f"{path}: cannot read the component: {exc.strerror or exc}") from None
    return _checked_magic(path, source)


def _checked_magic(path: Path, source: bytes) -> bytes:
    if not source.startswith(_MAGIC) and path.suffix != ".wat":
        raise ComponentError(f"{path}: not a WebAssembly file (it does not start with \\0asm)")
    return source


def _compile(path: Path, source: bytes, policy: Policy) -> wc.Component:
    try:
        return cache.compile_component(source, fuel=policy.limits.fuel is not None)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ComponentError(
            f"{path}: not a WebAssembly component ({first}). statefulmcp serves components (the "
            "component model), not core modules: build it with componentize-py, `cargo component`, "
            "or wrap a module with `wasm-tools component new`"
        ) from None


def load_wasm(
    path: Path, options: LoadOptions | None = None, checked: ComponentFile | None = None
) -> ComponentSpec:
    """Load a WebAssembly component; its exported functions become its tools.

    Options come from `options` where set, then from the policy file beside the component
    (`<stem>.toml`), then the defaults: stateless, no key, deny everything. Linear memory is never
    persisted, so durability is always "memory": a stateful instance keeps its state until it is
    unloaded, the server stops, or it traps. With `checked`, the component and its policy are
    those bytes, already read; the disk is not looked at.
    """
    # absolute(), not resolve(): a symlinked component keeps the policy beside the link.
    path = Path(path).absolute()
    source = _read(path) if checked is None else _checked_magic(path, checked.data)
    policy = load_policy(path, None if checked is None else checked.policies)
    opts = (options or LoadOptions()).over(policy.options)
    name = opts.name or snake_case(path.stem)
    if opts.durability == "turn":
        raise ComponentError(
            f"{path}: a WebAssembly component's state is its linear memory, which is not persisted; "
            'load it with durability "memory"'
        )
    component = _compile(path, source, policy)
    eng = engines.engine(policy.limits.fuel is not None)
    exports = list(_exports(component, eng))
    if not exports:
        raise ComponentError(f"{path}: the component exports no functions, so it has no tools")
    docs = package_docs(source)
    tools = []
    for tool_name, export in zip(_tool_names(exports), exports, strict=True):
        try:
            tools.append(_tool(tool_name, export, path, docs.of(export.interface, export.function)))
        except values.Unsupported as exc:
            raise ComponentError(f"{path}: cannot serve `{export.qualified}` as a tool: {exc}") from None
    stateful, key, handles = opts.instance_model()
    per_session = bool(opts.per_session)
    if opts.state_resource:
        raise ComponentError(
            f"{path}: state_resource=true serves a component's self.state, and a WebAssembly component keeps "
            "its state in its own linear memory; serve what it holds through one of its tools instead"
        )
    _check_options(path, name, stateful, None if per_session else key, tools)
    imports = list(component.type.imports(eng))
    linker = wc.Linker(eng)
    linker.add_wasip2()
    uses_http = http.imports_http(imports)
    if uses_http:
        http.link(linker, eng, path)
    config.link(linker, imports)
    grants = Grants(policy)
    blueprint = Blueprint(
        name=name,
        component=component,
        linker=linker,
        engine=eng,
        grants=grants,
        stateful=stateful,
        http=uses_http,
    )
    _try_instantiate(path, blueprint)
    return ComponentSpec(
        name=name,
        source=str(path),
        tools=tuple(tools),
        new_instance=blueprint.new_instance,
        stateful=stateful,
        key=key,
        handles=handles,
        per_session=per_session,
        durability="memory",
        details={"kind": "wasm"},
        permissions=grants,
        sandboxed=True,
        max_instances=policy.limits.instances if key else None,
        idle_seconds=opts.idle_seconds,
        handle_idle_seconds=opts.handle_idle_seconds if handles else None,
    )


def _check_options(path: Path, name: str, stateful: bool, key: str | None, tools: list[ToolSpec]) -> None:
    if key and not stateful:
        raise ComponentError(
            f"{path}: component {name!r} is keyed by {key!r} but not stateful; keys select instances "
            "of a stateful component, so also set stateful"
        )
    if key:
        for spec in tools:
            if key not in spec.input_schema["properties"]:
                raise ComponentError(
                    f"{path}: component {name!r} is keyed by {key!r}, but its function for tool "
                    f"{spec.name!r} has no {key!r} parameter; add `{key}: string` to every exported "
                    "function, or load it with another key"
                )


def _try_instantiate(path: Path, blueprint: Blueprint) -> None:
    """Instantiate once at load, so missing imports or a too-small memory cap fail the load."""
    try:
        blueprint.new_instance().start()
    except InstanceLost as exc:
        raise ComponentError(
            f"{path}: {exc}. A component may import WASI 0.2 interfaces, wasi:http and wasi:config/store "
            "only (no custom imports) and must start within its limits"
        ) from None
