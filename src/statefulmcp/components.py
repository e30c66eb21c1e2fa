"""Turning Python classes and modules into component specs: tools, schemas and load options.

A *spec* is everything the host needs to serve a component without knowing where it came from:
its name, its tools (with JSON schemas, an argument validator and a result converter) and a
factory for instances. Python classes, modules of functions and WebAssembly components all end
up as a `ComponentSpec`, so routing, instances and the transport never special-case a kind.
"""

from __future__ import annotations

import base64
import functools
import inspect
import re
import typing
import urllib.parse
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar, overload

import pydantic_core
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata, func_metadata
from mcp.server.mcpserver.utilities.types import Audio, Image
from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    GetPromptResult,
    PromptArgument,
    PromptMessage,
    ReadResourceResult,
    TextContent,
    TextResourceContents,
)
from pydantic import TypeAdapter, ValidationError

from statefulmcp._errors import ComponentError, InstanceLost, ToolInputError, ToolResultError
from statefulmcp._options import Activation, Durability, LoadOptions, check_seconds, check_state_resource
from statefulmcp.context import Context, current

__all__ = [
    "Activation",
    "Audio",
    "ComponentError",
    "ComponentSpec",
    "Durability",
    "Image",
    "InstanceLost",
    "LoadOptions",
    "PromptSpec",
    "ResourceSpec",
    "ToolInputError",
    "ToolResultError",
    "ToolSpec",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The dialect pydantic writes and MCP (2025-11-25) takes for schemas that name none."""

_TOOL_ATTR = "__statefulmcp_tool__"
_COMPONENT_ATTR = "__statefulmcp_component__"
_BACKGROUND_ATTR = "__statefulmcp_background__"
_PROMPT_ATTR = "__statefulmcp_prompt__"
_RESOURCE_ATTR = "__statefulmcp_resource__"
_DECLARING = (_TOOL_ATTR, _PROMPT_ATTR, _RESOURCE_ATTR)

# Names of the hooks a stateful component may define; they are never exposed as tools.
LIFECYCLE_HOOKS = ("on_activate", "on_deactivate")


@dataclass(frozen=True, slots=True)
class ToolDecl:
    """What `@tool` records on a function."""

    name: str | None
    description: str | None
    timeout: float | None
    input_schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PromptDecl:
    """What `@prompt` records on a function."""

    name: str | None
    description: str | None
    complete: Mapping[str, Callable[[str], Any]]


@dataclass(frozen=True, slots=True)
class ResourceDecl:
    """What `@resource` records on a function."""

    uri: str
    name: str | None
    description: str | None
    mime_type: str | None
    complete: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackgroundDecl:
    """What `@background` records on a method: a loop, or a tick every `every` seconds."""

    every: float | None


@dataclass(frozen=True, slots=True)
class ComponentDecl:
    """What `@component` records on a class."""

    options: LoadOptions
    uses: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of a component, ready to serve.

    `call(instance, arguments)` runs the tool on an instance with validated arguments and returns
    its value (or an awaitable of it when `is_async`); a sync `call` is run on a worker thread
    while the instance's turn is held, so it never blocks an event loop.
    """

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    validate: Callable[[dict[str, Any]], dict[str, Any]]
    call: Callable[[Any, dict[str, Any]], Any]
    is_async: bool
    to_result: Callable[[Any], Any]
    """Converts the value inside the turn: to a `CallToolResult` (a prompt's body: a `GetPromptResult`)."""
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt of a component: what `prompts/list` shows, and `body`, which runs it.

    The body is a `ToolSpec` whose result is a `GetPromptResult`, so a prompt takes the path a
    tool does: validated arguments, a turn of its instance (or a fresh stateless object), a
    conversion inside that turn.
    """

    name: str
    description: str
    arguments: tuple[PromptArgument, ...]
    body: ToolSpec
    complete: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    """Argument name -> what completes it: called with the text typed so far, returns candidates."""


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource of a component (a template when its URI has `{param}` placeholders).

    Like a prompt's, its body is a `ToolSpec` run the way a tool is, with the template's
    parameters as its arguments. The body's `to_result` answers for the declared URI; a read
    converts with `reader(uri)`, for the URI it was asked for.
    """

    uri: str
    """The URI, or the URI template (RFC 6570 simple `{name}` expansions only)."""
    name: str
    description: str
    mime_type: str | None
    parameters: tuple[str, ...]
    body: ToolSpec
    pattern: re.Pattern[str]
    complete: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    """Parameter name -> what completes it: called with the text typed so far, returns candidates."""

    @property
    def is_template(self) -> bool:
        return bool(self.parameters)

    def match(self, uri: str) -> dict[str, str] | None:
        """The template's parameters in `uri` (percent-decoded), or None if it does not match."""
        found = self.pattern.fullmatch(uri)
        if found is None:
            return None
        return {name: urllib.parse.unquote(value) for name, value in found.groupdict().items()}

    def reader(self, uri: str) -> Callable[[Any], ReadResourceResult]:
        """The converter of a read of `uri`: the method's value to a `ReadResourceResult`."""
        return functools.partial(_read_result, self.name, uri, self.mime_type)


class Permissions(Protocol):
    """A component's grants as they stand now (they may change while it is loaded)."""

    def describe(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class ComponentSpec:
    """A loadable component: its tools, how to make an instance, and its resolved options."""

    name: str
    source: str
    tools: tuple[ToolSpec, ...]
    new_instance: Callable[[], Any]
    prompts: tuple[PromptSpec, ...] = ()
    resources: tuple[ResourceSpec, ...] = ()
    stateful: bool = False
    key: str | None = None
    handles: bool = False
    per_session: bool = False
    """One instance per MCP session (`key` is then `SESSION_ARGUMENT`, which the host adds to
    every tool; see `statefulmcp.per_session`)."""
    durability: Durability = "memory"
    activate: Activation = "lazy"
    backgrounds: tuple[tuple[str, BackgroundDecl], ...] = ()
    uses: Mapping[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    close_instance: Callable[[Any], None] | None = None
    binds_context: bool = False
    """True for Python classes: the host gives each instance `self.state` and `self.wait_until`."""
    sandboxed: bool = False
    """True for WebAssembly: its calls run on threads of their own, which user sync code cannot fill."""
    permissions: Permissions | None = None
    """What the component may touch, changeable at run time (WebAssembly: `wasm.grants.Grants`);
    `list_components` shows its current grants."""
    max_instances: int | None = None
    """Live instances kept at most; for a new key beyond it the least recently used idle one is
    evicted. WebAssembly only: each holds its own linear memory, so keys must not add up without
    bound (a Python instance's memory is the component author's to bound)."""
    idle_seconds: float | None = None
    """Passivate an instance after this long without a call; None: the host's default applies
    to durable components (passivating one loses nothing), memory ones stay."""
    handle_idle_seconds: float | None = None
    """Expire a handle after this long without a call; None: handles live until closed."""
    state_resource: bool = False
    """Serve each instance's committed `self.state` as a resource (`statefulmcp.state_resources`)."""


_F = TypeVar("_F", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type)


@overload
def tool(fn: _F, /) -> _F: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    input_schema: Mapping[str, Any] | None = None,
) -> Callable[[_F], _F]: ...
def tool(
    fn: _F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    input_schema: Mapping[str, Any] | None = None,
) -> _F | Callable[[_F], _F]:
    """Expose a method of a `@component` class (or a module-level function) as an MCP tool.

    The input schema comes from the type hints (JSON Schema 2020-12, as pydantic writes it),
    the description from the docstring, and the output schema from the return annotation.
    `input_schema` replaces the advertised schema for a tool that needs a hand-written one (the
    type hints still validate what arrives). `timeout` caps a call in seconds.
    """

    if timeout is not None:
        check_seconds(timeout, "@tool(timeout=...)")
    if input_schema is not None and (
        not isinstance(input_schema, Mapping) or input_schema.get("type") != "object"
    ):
        raise ComponentError(
            f'@tool(input_schema=...) must be a JSON Schema object with "type": "object", not {input_schema!r}'
        )

    def mark(f: _F) -> _F:
        if not callable(f):
            raise ComponentError(f"@tool decorates a function or method, not {f!r}")
        decl = ToolDecl(name=name, description=description, timeout=timeout, input_schema=input_schema)
        setattr(f, _TOOL_ATTR, decl)
        return f

    return mark(fn) if fn is not None else mark


@overload
def prompt(fn: _F, /) -> _F: ...
@overload
def prompt(
    *,
    name: str | None = None,
    description: str | None = None,
    complete: Mapping[str, Callable[[str], Any]] | None = None,
) -> Callable[[_F], _F]: ...
def prompt(
    fn: _F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    complete: Mapping[str, Callable[[str], Any]] | None = None,
) -> _F | Callable[[_F], _F]:
    """Expose a method of a `@component` class (or a module-level function) as an MCP prompt.

    Its arguments come from the type hints (clients send them as text, parsed as for a tool),
    the description from the docstring. It returns a `str` (one user message), or a list of
    messages: the SDK's `PromptMessage`s (or dicts of that shape; a `str` item is a user message).
    `complete={"arg": fn}` answers `completion/complete` for that argument: `fn(typed_so_far)`
    (sync or async) returns the candidate values.
    """
    hooks = dict(complete or {})
    for argument, hook in hooks.items():
        if not callable(hook):
            raise ComponentError(f"@prompt(complete=...): the hook of {argument!r} is not callable")

    def mark(f: _F) -> _F:
        if not callable(f):
            raise ComponentError(f"@prompt decorates a function or method, not {f!r}")
        setattr(f, _PROMPT_ATTR, PromptDecl(name=name, description=description, complete=hooks))
        return f

    return mark(fn) if fn is not None else mark


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resource(
    uri: str,
    *,
    name: str | None = None,
    description: str | None = None,
    mime_type: str | None = None,
    complete: Mapping[str, Callable[[str], Any]] | None = None,
) -> Callable[[_F], _F]:
    """Expose a method of a `@component` class (or a module-level function) as an MCP resource.

    A `uri` with `{param}` placeholders makes a resource template: each placeholder is a
    parameter of the method, passed the text the client's URI has there. The method returns a
    `str` (text, `text/plain` unless `mime_type` says otherwise), `bytes` (a blob,
    `application/octet-stream` unless told), or the SDK's `TextResourceContents` /
    `BlobResourceContents` (or a list of them). `complete={"param": fn}` answers
    `completion/complete` for a template's parameter: `fn(typed_so_far)` (sync or async) returns
    the candidates; a keyed component's key parameter is completed with the keys that exist
    unless it has a hook of its own.
    """
    hooks = dict(complete or {})
    for parameter, hook in hooks.items():
        if not callable(hook):
            raise ComponentError(f"@resource(complete=...): the hook of {parameter!r} is not callable")
    if not isinstance(uri, str) or not _SCHEME.match(uri):
        raise ComponentError(f"@resource needs a URI with a scheme, such as 'data://config', not {uri!r}")
    if "{" in _PLACEHOLDER.sub("", uri) or "}" in _PLACEHOLDER.sub("", uri):
        raise ComponentError(
            f"@resource({uri!r}): only simple {{name}} placeholders are supported (a Python identifier "
            "each, no RFC 6570 operators such as {+path} or {?q})"
        )
    names = _PLACEHOLDER.findall(uri)
    if len(set(names)) != len(names):
        raise ComponentError(f"@resource({uri!r}) names a placeholder twice; each parameter appears once")

    def mark(f: _F) -> _F:
        if not callable(f):
            raise ComponentError(f"@resource decorates a function or method, not {f!r}")
        setattr(
            f,
            _RESOURCE_ATTR,
            ResourceDecl(uri=uri, name=name, description=description, mime_type=mime_type, complete=hooks),
        )
        return f

    return mark


@overload
def background(fn: _F, /) -> _F: ...
@overload
def background(*, every: float | None = None) -> Callable[[_F], _F]: ...
def background(fn: _F | None = None, /, *, every: float | None = None) -> _F | Callable[[_F], _F]:
    """Run an async method of a stateful component between calls, for the instance's whole life.

    Without `every` the method is a loop started on activation; with `every=SECONDS` it is a
    tick on a fixed, drift-free schedule, and each tick is a turn.
    """

    def mark(f: _F) -> _F:
        if not inspect.iscoroutinefunction(f):
            raise ComponentError(f"@background method {f.__qualname__} must be `async def`")
        if every is not None:
            check_seconds(every, f"@background(every=...) of {f.__qualname__}")
        setattr(f, _BACKGROUND_ATTR, BackgroundDecl(every=every))
        return f

    return mark(fn) if fn is not None else mark


class Stateful:
    """An optional base class for components: declares, for type checkers, what the host gives
    each instance of a loaded component. Inheriting from it changes nothing at run time.

    `state` is the instance's durable mapping, `key` its key (None for a singleton or a
    stateless call), `wait_until` waits inside a turn without holding it, and
    `resource_updated(uri)` tells subscribers of `uri` it changed, once the turn commits.
    """

    state: MutableMapping[str, Any]
    key: str | None

    def resource_updated(self, uri: str) -> None:
        """Replaced on each instance by the host; here only to give it a type."""
        raise RuntimeError("resource_updated works on an instance of a loaded component only")

    async def wait_until(self, predicate: Callable[[], object], timeout: float | None = None) -> None:
        """Replaced on each instance by the host; here only to give it a type."""
        raise RuntimeError("wait_until works on an instance of a loaded component only")


@overload
def component(cls: _C, /) -> _C: ...
@overload
def component(
    *,
    name: str | None = None,
    stateful: bool = False,
    key: str | None = None,
    handles: bool = False,
    per_session: bool = False,
    durability: Durability | None = None,
    activate: Activation = "lazy",
    uses: Mapping[str, Any] | None = None,
    idle_seconds: float | None = None,
    handle_idle_seconds: float | None = None,
    state_resource: bool = False,
) -> Callable[[_C], _C]: ...
def component(
    cls: _C | None = None,
    /,
    *,
    name: str | None = None,
    stateful: bool = False,
    key: str | None = None,
    handles: bool = False,
    per_session: bool = False,
    durability: Durability | None = None,
    activate: Activation = "lazy",
    uses: Mapping[str, Any] | None = None,
    idle_seconds: float | None = None,
    handle_idle_seconds: float | None = None,
    state_resource: bool = False,
) -> _C | Callable[[_C], _C]:
    """Declare a class as a component; its `@tool` methods become MCP tools.

    `stateful=True` keeps one instance alive between calls (per value of `key`, if given);
    `handles=True` makes the host mint the key values itself through `<name>_open`.
    `per_session=True` keeps one instance per MCP session, with no argument in the tools (it
    implies `stateful=True`; sessionless clients get a handle from `<name>_open`).
    `idle_seconds` passivates an instance after that long without a call (durable components
    get the server's default, `--idle-seconds`); `handle_idle_seconds` expires a handle after
    that long without a call. `state_resource=True` serves each instance's committed `self.state`
    as the resource `state://<name>/<key>` (`state://<name>` for a singleton), listable, readable
    and subscribable; it is off by default because state may be private.
    """
    decl = ComponentDecl(
        options=LoadOptions(
            name=name,
            stateful=stateful,
            key=key,
            handles=handles,
            per_session=per_session,
            durability=durability,
            activate=activate,
            idle_seconds=idle_seconds,
            handle_idle_seconds=handle_idle_seconds,
            state_resource=state_resource or None,
        ),
        uses=dict(uses or {}),
    )

    def mark(c: _C) -> _C:
        if not inspect.isclass(c):
            raise ComponentError(f"@component decorates a class, not {c!r}")
        setattr(c, _COMPONENT_ATTR, decl)
        return c

    return mark(cls) if cls is not None else mark


def snake_case(name: str) -> str:
    """`TickAggregator` -> `tick_aggregator`, `HTTPCache` -> `http_cache`, `notes-v2` -> `notes_v2`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower()


def _description(fn: Callable[..., Any], decl: ToolDecl | PromptDecl | ResourceDecl) -> str:
    return decl.description or inspect.cleandoc(fn.__doc__ or "") or fn.__name__


def _validator(meta: FuncMetadata) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The SDK's argument validation, with its per-call set-up hoisted out of the hot path.

    `FuncMetadata.validate_arguments` rebuilds a field map on every call to pre-parse JSON sent
    inside strings (a quirk of some clients); here the map is built once, and the pre-parse only
    runs when a string arrives for a field that is not a string.
    """
    model = meta.arg_model
    fields = [(name, info.alias or name) for name, info in model.model_fields.items()]
    known = {alias for _, alias in fields}
    not_strings = {alias for name, alias in fields if model.model_fields[name].annotation is not str}

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in arguments if k not in known]
        if unknown:
            takes = ", ".join(sorted(known)) or "no arguments"
            raise ToolInputError(f"{unknown[0]}: unknown argument; this tool takes {takes}")
        try:
            if any(isinstance(v, str) and k in not_strings for k, v in arguments.items()):
                arguments = meta.pre_parse_json(arguments)
            parsed = model.model_validate(arguments)
            return {alias: getattr(parsed, name) for name, alias in fields}
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ToolInputError(problems) from None
        except RecursionError:
            raise ToolInputError("(arguments): nested too deeply") from None

    return validate


def refuse_lazy(tool_name: str, value: Any) -> None:
    """Raise `ToolResultError` for a generator or coroutine: a promise of a value, not one."""
    if inspect.isgenerator(value) or inspect.isasyncgen(value) or inspect.iscoroutine(value):
        if inspect.iscoroutine(value):
            value.close()
        raise ToolResultError(
            f"tool {tool_name!r} returned a {type(value).__name__}, not a value; return a list "
            "(or await the coroutine) instead"
        )


def _converter(meta: FuncMetadata, tool_name: str) -> Callable[[Any], CallToolResult]:
    def to_result(value: Any) -> CallToolResult:
        refuse_lazy(tool_name, value)
        try:
            if not isinstance(value, CallToolResult):
                # Serializing here, inside the turn, turns a value the wire cannot carry (a lone
                # surrogate, a cycle) into a clear error instead of a transport failure later.
                pydantic_core.to_json(value, fallback=_media_only)
            result = meta.convert_result(value)
        except (ValidationError, pydantic_core.PydanticSerializationError, ValueError) as exc:
            raise ToolResultError(_unsendable(tool_name, value, exc)) from None
        except RecursionError:
            raise ToolResultError(f"tool {tool_name!r} returned a value nested too deeply to send") from None
        assert isinstance(result, CallToolResult)
        return result

    return to_result


def _media_only(value: Any) -> Any:
    """The JSON check's answer for what is not JSON: an `Image` or `Audio` becomes content of
    its own (the SDK's conversion encodes it); anything else is refused as unsendable."""
    if isinstance(value, Image | Audio):
        return None
    raise pydantic_core.PydanticSerializationError(f"Unable to serialize unknown type: {type(value)}")


def _unsendable(tool_name: str, value: Any, exc: Exception) -> str:
    text = str(exc)
    if any(word in text.lower() for word in ("recursion", "circular", "depth")):
        return f"tool {tool_name!r} returned a value nested too deeply (or circular) to send as JSON"
    if "surrogate" in text.lower():
        return f"tool {tool_name!r} returned a string with a lone surrogate, which is not valid Unicode text"
    if isinstance(exc, ValidationError):
        return f"tool {tool_name!r} returned a value that does not match its return annotation: {exc}"
    return (
        f"tool {tool_name!r} returned a {type(value).__name__}, which is not JSON-serializable ({text}); "
        "return JSON data (dict, list, str, int, float, bool, None) or a pydantic model"
    )


def context_parameter(fn: Callable[..., Any], qualified: str) -> str | None:
    """The name of `fn`'s parameter annotated `Context`, if it has one (at most one may)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: then the schema builder says what is wrong
        return None
    names = [name for name, hint in hints.items() if hint is Context and name != "return"]
    if len(names) > 1:
        raise ComponentError(f"{qualified} declares {len(names)} Context parameters; one is enough")
    return names[0] if names else None


def _tool_spec(
    fn: Callable[..., Any],
    decl: ToolDecl,
    *,
    method: bool,
    qualified: str,
    convert: Callable[[FuncMetadata, str], Callable[[Any], Any]] | None = None,
) -> ToolSpec:
    """The spec of a tool, or with `convert` (which makes the result converter) of a prompt's body."""
    short = decl.name or fn.__name__
    is_async = inspect.iscoroutinefunction(fn)
    context = context_parameter(fn, qualified)
    if context is not None and not is_async:
        raise ComponentError(
            f"{qualified} takes a Context, whose log and report_progress are awaited; make it `async def`"
        )
    skip = (("self",) if method else ()) + ((context,) if context else ())
    try:
        meta = func_metadata(fn, skip_names=skip)
    except Exception as exc:
        raise ComponentError(f"cannot build a schema for {qualified}: {exc}") from exc
    if context is not None:

        def call(instance: Any, arguments: dict[str, Any]) -> Any:
            passed = {**arguments, context: current()}
            return fn(instance, **passed) if method else fn(**passed)

    elif method:

        def call(instance: Any, arguments: dict[str, Any]) -> Any:
            return fn(instance, **arguments)

    else:

        def call(instance: Any, arguments: dict[str, Any]) -> Any:
            return fn(**arguments)

    if decl.input_schema is not None:
        schema = dict(decl.input_schema)
    else:
        schema = {
            "$schema": JSON_SCHEMA_DIALECT,
            **meta.arg_model.model_json_schema(by_alias=True),
            "additionalProperties": False,
        }
    return ToolSpec(
        name=short,
        description=_description(fn, decl),
        input_schema=schema,
        output_schema=meta.output_schema,
        validate=_validator(meta),
        call=call,
        is_async=is_async,
        to_result=(convert or _converter)(meta, short),
        timeout=decl.timeout,
    )


_MESSAGES: TypeAdapter[list[PromptMessage]] = TypeAdapter(list[PromptMessage])


def _prompt_spec(fn: Callable[..., Any], decl: PromptDecl, *, method: bool, qualified: str) -> PromptSpec:
    description = _description(fn, decl)

    def convert(meta: FuncMetadata, name: str) -> Callable[[Any], GetPromptResult]:
        def to_result(value: Any) -> GetPromptResult:
            refuse_lazy(name, value)
            items = value if isinstance(value, list) else [value]
            try:
                messages = _MESSAGES.validate_python(
                    [_user_message(item) if isinstance(item, str) else item for item in items]
                )
            except ValidationError as exc:
                raise ToolResultError(
                    f"prompt {name!r} returned {type(value).__name__}, not messages; return a str or a list "
                    f"of PromptMessage ({exc.error_count()} problems: {exc.errors()[0]['msg']})"
                ) from None
            return GetPromptResult(description=description, messages=messages)

        return to_result

    body = _tool_spec(
        fn, ToolDecl(decl.name, description, None), method=method, qualified=qualified, convert=convert
    )
    required = set(body.input_schema.get("required", ()))
    arguments = tuple(
        PromptArgument(name=arg, description=field.get("description"), required=arg in required)
        for arg, field in body.input_schema.get("properties", {}).items()
    )
    unknown = sorted(set(decl.complete) - {a.name for a in arguments})
    if unknown:
        raise ComponentError(
            f"{qualified}: @prompt(complete=...) names {', '.join(map(repr, unknown))}, which is not an "
            "argument of the prompt"
        )
    return PromptSpec(
        name=body.name, description=description, arguments=arguments, body=body, complete=decl.complete
    )


def _resource_spec(
    fn: Callable[..., Any], decl: ResourceDecl, *, method: bool, qualified: str
) -> ResourceSpec:
    description = _description(fn, decl)
    body = _tool_spec(
        fn,
        ToolDecl(decl.name, description, None),
        method=method,
        qualified=qualified,
        convert=lambda meta, name: functools.partial(_read_result, name, decl.uri, decl.mime_type),
    )
    placeholders = _PLACEHOLDER.findall(decl.uri)
    arguments = set(body.input_schema.get("properties", {}))
    missing, extra = sorted(set(placeholders) - arguments), sorted(arguments - set(placeholders))
    if missing or extra:
        problems = [f"the URI's {', '.join(map(repr, missing))} is no parameter of it"] if missing else []
        if extra:
            problems.append(f"its parameters {', '.join(map(repr, extra))} are not placeholders of the URI")
        raise ComponentError(
            f"{qualified}: @resource({decl.uri!r}): {'; '.join(problems)}. Each {{name}} of the URI must be a "
            "parameter of the method, and each parameter a {name} of the URI"
        )
    unknown = sorted(set(decl.complete) - set(placeholders))
    if unknown:
        raise ComponentError(
            f"{qualified}: @resource(complete=...) names {', '.join(map(repr, unknown))}, which is not a "
            f"parameter of the template {decl.uri!r}"
        )
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
        for i, part in enumerate(_PLACEHOLDER.split(decl.uri))
    )
    return ResourceSpec(
        uri=decl.uri,
        name=body.name,
        description=description,
        mime_type=decl.mime_type,
        parameters=tuple(placeholders),
        body=body,
        pattern=re.compile(pattern),
        complete=decl.complete,
    )


def _read_result(name: str, uri: str, mime_type: str | None, value: Any) -> ReadResourceResult:
    refuse_lazy(name, value)
    items = value if isinstance(value, list) else [value]
    return ReadResourceResult(contents=[_contents(name, uri, mime_type, item) for item in items])


def _contents(
    name: str, uri: str, mime_type: str | None, item: Any
) -> TextResourceContents | BlobResourceContents:
    if isinstance(item, TextResourceContents | BlobResourceContents):
        return item
    if isinstance(item, str):
        return TextResourceContents(uri=uri, mime_type=mime_type or "text/plain", text=item)
    if isinstance(item, bytes | bytearray | memoryview):
        blob = base64.b64encode(item).decode("ascii")
        return BlobResourceContents(uri=uri, mime_type=mime_type or "application/octet-stream", blob=blob)
    raise ToolResultError(
        f"resource {name!r} returned {type(item).__name__}; return a str (text), bytes (a blob), or "
        "TextResourceContents / BlobResourceContents (or a list of them)"
    )


def _user_message(text: str) -> PromptMessage:
    return PromptMessage(role="user", content=TextContent(type="text", text=text))


def tool_result_text(text: str, *, error: bool = False) -> CallToolResult:
    """A plain-text tool result, the shape every error reply takes."""
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=error)


def _check_key(name: str, key: str, tools: tuple[ToolSpec, ...]) -> None:
    missing = [spec.name for spec in tools if key not in spec.input_schema.get("properties", {})]
    if missing:
        raise ComponentError(
            f"component {name!r} is keyed by {key!r}, but its tools, prompts or resources "
            f"{', '.join(map(repr, missing))} have no {key!r} argument; add `{key}: str` to every one of them "
            f"(a {{{key}}} placeholder to a resource's URI), or load it with another key"
        )


def spec_from_class(cls: type, source: str, options: LoadOptions | None = None) -> ComponentSpec:
    """The spec of a `@component` class, with `options` overriding what the class declares."""
    decl: ComponentDecl | None = getattr(cls, _COMPONENT_ATTR, None)
    if decl is None:
        raise ComponentError(f"{cls.__qualname__} is not decorated with @component")
    opts = (options or LoadOptions()).over(decl.options)
    name = opts.name or snake_case(cls.__name__)
    tools: list[ToolSpec] = []
    prompts: list[PromptSpec] = []
    resources: list[ResourceSpec] = []
    backgrounds: list[tuple[str, BackgroundDecl]] = []
    for attr, member in inspect.getmembers(cls, predicate=inspect.isfunction):
        tool_decl: ToolDecl | None = getattr(member, _TOOL_ATTR, None)
        if tool_decl is not None:
            if attr in LIFECYCLE_HOOKS:
                raise ComponentError(f"{cls.__qualname__}.{attr} is a lifecycle hook and cannot be a @tool")
            tools.append(_tool_spec(member, tool_decl, method=True, qualified=f"{cls.__qualname__}.{attr}"))
        prompt_decl: PromptDecl | None = getattr(member, _PROMPT_ATTR, None)
        if prompt_decl is not None:
            prompts.append(
                _prompt_spec(member, prompt_decl, method=True, qualified=f"{cls.__qualname__}.{attr}")
            )
        resource_decl: ResourceDecl | None = getattr(member, _RESOURCE_ATTR, None)
        if resource_decl is not None:
            resources.append(
                _resource_spec(member, resource_decl, method=True, qualified=f"{cls.__qualname__}.{attr}")
            )
        bg: BackgroundDecl | None = getattr(member, _BACKGROUND_ATTR, None)
        if bg is not None:
            backgrounds.append((attr, bg))
    stateful, key, handles = opts.instance_model()
    per_session = bool(opts.per_session)
    if not tools and not prompts and not resources and not handles:
        raise ComponentError(
            f"component {name!r} ({cls.__qualname__}) has no @tool, @prompt or @resource methods"
        )
    if (key or handles) and not stateful:
        raise ComponentError(
            f"component {name!r} sets key={key!r} but is not stateful; keys select instances of a "
            "stateful component, so add stateful=True"
        )
    if backgrounds and not stateful:
        raise ComponentError(f"component {name!r} has @background methods, which need stateful=True")
    if key and not per_session:
        _check_key(name, key, (*tools, *(p.body for p in prompts), *(r.body for r in resources)))
    if opts.state_resource:
        check_state_resource(name, stateful, handles, per_session)
    return ComponentSpec(
        name=name,
        source=source,
        tools=tuple(tools),
        new_instance=cls,
        prompts=tuple(prompts),
        resources=tuple(resources),
        stateful=stateful,
        key=key,
        handles=handles,
        per_session=per_session,
        durability=opts.durability or ("turn" if stateful else "memory"),
        activate=opts.activate or "lazy",
        backgrounds=tuple(backgrounds),
        uses=decl.uses,
        binds_context=True,
        idle_seconds=opts.idle_seconds,
        handle_idle_seconds=opts.handle_idle_seconds if handles else None,
        state_resource=bool(opts.state_resource),
    )


class _ModuleTools:
    """The instance type of a module-level component: functions need no instance."""


def spec_from_functions(
    name: str, functions: list[Callable[..., Any]], source: str, options: LoadOptions | None = None
) -> ComponentSpec:
    """A stateless component made of module-level `@tool`, `@prompt` and `@resource` functions."""
    opts = options or LoadOptions()
    if opts.stateful or opts.key or opts.handles or opts.per_session or opts.state_resource:
        raise ComponentError(
            f"{source}: module-level @tool functions form a stateless component; "
            "write a @component(stateful=True) class to keep state"
        )
    tools = tuple(
        _tool_spec(fn, getattr(fn, _TOOL_ATTR), method=False, qualified=f"{source}:{fn.__name__}")
        for fn in functions
        if hasattr(fn, _TOOL_ATTR)
    )
    prompts = tuple(
        _prompt_spec(fn, getattr(fn, _PROMPT_ATTR), method=False, qualified=f"{source}:{fn.__name__}")
        for fn in functions
        if hasattr(fn, _PROMPT_ATTR)
    )
    resources = tuple(
        _resource_spec(fn, getattr(fn, _RESOURCE_ATTR), method=False, qualified=f"{source}:{fn.__name__}")
        for fn in functions
        if hasattr(fn, _RESOURCE_ATTR)
    )
    return ComponentSpec(
        name=opts.name or name,
        source=source,
        tools=tools,
        new_instance=_ModuleTools,
        prompts=prompts,
        resources=resources,
    )


def _declares(fn: Callable[..., Any]) -> bool:
    """Whether a function is a `@tool`, a `@prompt` or a `@resource`."""
    return any(hasattr(fn, attr) for attr in _DECLARING)


def specs_from_module(
    module: ModuleType, source: str, options: LoadOptions | None = None
) -> list[ComponentSpec]:
    """Every component a module defines: its `@component` classes, then its `@tool` functions.

    Only objects defined in the module itself count, so a component imported from elsewhere is
    not loaded twice.
    """
    classes: list[type] = []
    functions: list[Callable[..., Any]] = []
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(value) and hasattr(value, _COMPONENT_ATTR):
            classes.append(value)
        elif inspect.isfunction(value) and _declares(value):
            functions.append(value)
    if len(classes) + (1 if functions else 0) > 1 and options is not None and options.name:
        raise ComponentError(f"{source} holds several components; a load-time name fits only one")
    specs = [spec_from_class(c, source, options) for c in classes]
    if functions:
        stem = snake_case(Path(source).stem) if source else snake_case(module.__name__.rpartition(".")[2])
        specs.append(spec_from_functions(stem, functions, source, options))
    if not specs:
        raise ComponentError(
            f"{source} holds no components: decorate a class with @component or functions with @tool"
        )
    return specs


def specs_from_object(obj: Any, options: LoadOptions | None = None) -> list[ComponentSpec]:
    """The specs of an in-process object: a `@component` class, a module, or a `@tool` (or
    `@prompt`) function."""
    if inspect.isclass(obj):
        return [spec_from_class(obj, f"{obj.__module__}:{obj.__qualname__}", options)]
    if isinstance(obj, ModuleType):
        return specs_from_module(obj, getattr(obj, "__file__", None) or obj.__name__, options)
    if inspect.isfunction(obj) and _declares(obj):
        name = (options.name if options else None) or snake_case(obj.__name__)
        return [spec_from_functions(name, [obj], f"{obj.__module__}:{obj.__qualname__}", options)]
    raise ComponentError(
        f"cannot load {obj!r}: expected a path, a @component class, a module or a @tool function"
    )
