"""State as resources: each instance's committed `self.state`, served as `state://<component>/<key>`.

Opt-in per component (`state_resource=True`), because state may be private. A client can list
the instances (`resources/list`, at most `LISTED` per component), read one as JSON, and
subscribe to hear when a turn commits a change to it (`statefulmcp.updates`). A read is never of
a half-done turn: it takes the committed values (the running turn's writes left out), and its
answer waits, like any reply, until what it shows is durable. It does not take the turn, so a
read never queues behind a long call, and it never activates an instance: a key that is not
live is read from the store, and a key with neither is an error, never a fresh instance.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from mcp_types import ReadResourceResult, Resource, ResourceTemplate, TextResourceContents

from statefulmcp._errors import StatefulMCPError, ToolCallError, ToolInputError
from statefulmcp.state.view import StateView
from statefulmcp.updates import STATE_SCHEME, state_uri

if TYPE_CHECKING:
    from statefulmcp.live import LiveComponent

LISTED = 100
"""Instances of one component that `resources/list` shows at most; read any other by its key."""

MIME_TYPE = "application/json"


def parse(uri: str) -> tuple[str, str | None] | None:
    """(component, key) of a `state://` URI (key None for `state://<component>`), else None."""
    if not uri.startswith(STATE_SCHEME):
        return None
    name, slash, key = uri.removeprefix(STATE_SCHEME).partition("/")
    return name, urllib.parse.unquote(key) if slash else None


def template(live: LiveComponent) -> ResourceTemplate | None:
    """The template of a keyed component's state resources (`state://<name>/{<key>}`)."""
    key = live.spec.key
    if key is None:
        return None
    return ResourceTemplate(
        uri_template=f"{STATE_SCHEME}{live.name}/{{{key}}}",
        name=f"{live.name} state",
        description=f"The committed state of the {live.name} instance of a {key}, as JSON (resources/list "
        f"shows at most {LISTED} instances; complete {key!r} for the others).",
        mime_type=MIME_TYPE,
    )


async def listed(live: LiveComponent) -> list[Resource]:
    """The state resources of `live`'s instances, live ones first, at most `LISTED`."""
    keys = await known_keys(live, "", LISTED)
    return [
        Resource(
            uri=state_uri(live.name, key),
            name=f"{live.name} state" if key is None else f"{live.name} state of {key}",
            description=f"The committed state of {live.name if key is None else f'{live.name}[{key!r}]'}, as JSON.",
            mime_type=MIME_TYPE,
        )
        for key in keys
    ]


async def known_keys(live: LiveComponent, prefix: str, limit: int) -> list[str | None]:
    """Keys that have an instance (live here, or with durable state) starting with `prefix`, at
    most `limit`, live ones first. A singleton has its one key, None. Runs on the engine."""
    if live.spec.key is None:
        return [None]
    found: dict[str | None, None] = {}
    for key in list(live.instances):
        if isinstance(key, str) and key.startswith(prefix):
            found[key] = None
    if live.store is not None and len(found) < limit:
        for key in sorted(await live.store.keys(live.name)):
            if key.startswith(prefix):
                found[key] = None
    return list(found)[:limit]


async def read(live: LiveComponent, key: str | None, uri: str) -> ReadResourceResult:
    """The committed state of `live`'s instance of `key`, as JSON. Runs on the engine."""
    instance = live.instances.get(key)
    if instance is not None and instance.activated and instance.dropped is None:
        text = _json(instance.view.committed())  # now: what the next turn writes is not ours
        try:
            await instance.gate()  # the answer shows writes of ticks whose commit may be in flight
        except StatefulMCPError as exc:
            raise ToolCallError(str(exc)) from None
    elif live.store is not None:
        data = StateView.from_rows(await live.store.load(live.name, "" if key is None else key))
        if key is not None and not len(data):
            raise _unknown(live, key, uri)
        text = _json(dict(data))
    elif key is None:
        text = _json({})
    else:
        raise _unknown(live, key, uri)
    return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type=MIME_TYPE, text=text)])


def _unknown(live: LiveComponent, key: str, uri: str) -> ToolInputError:
    return ToolInputError(
        f"resource {uri!r} not found: {live.name} has no instance for {live.spec.key} {key!r} (none is live "
        "and none has durable state); list the resources, or complete the template's key, to see which exist"
    )


def _json(data: dict[str, Any]) -> str:
    # In-memory state was never encoded by a commit, so a value that is not JSON shows as text.
    return json.dumps(data, indent=2, sort_keys=True, default=str)
