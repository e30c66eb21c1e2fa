"""Resource update notifications, the host's side: which URIs a commit changed, told to the transport.

A subscriber must hear "this resource changed" only once the change is committed (durable, for a
durable component), once per committing turn, and never for a turn that raised. So an instance
reports at its commit point (`Instance.commit`, or when a tick's pipelined commit lands), and
this module turns that into URIs: the instance's state resource (`state_resource=True`), the
component's resources whose URI its key fixes (a singleton's static resources, a template whose
one parameter is the key), and the URIs the turn announced itself (`self.resource_updated(uri)`).

The transport registers a listener on its own loop (`Updates.listen`); URIs are posted there
through that loop's mailbox, so the engine never calls the SDK and a slow subscriber never holds
a turn.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from statefulmcp._errors import ToolCallError
from statefulmcp.engine import mailbox

if TYPE_CHECKING:
    from statefulmcp.components import ComponentSpec

MAX_ANNOUNCED = 100
"""URIs one turn may announce with `self.resource_updated` (invariant 10: nothing unbounded)."""

STATE_SCHEME = "state://"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

Listener = Callable[[tuple[str, ...]], None]


def state_uri(component: str, key: str | None) -> str:
    """The URI of one instance's state: `state://<component>/<key>`, or `state://<component>`."""
    return STATE_SCHEME + component if key is None else f"{STATE_SCHEME}{component}/{quote(key)}"


def quote(text: str) -> str:
    """`text` as it stands in a URI the host writes (every reserved character percent-encoded)."""
    return urllib.parse.quote(text, safe="")


def check_uri(uri: object) -> str:
    """A URI a component may announce: text with a scheme (a typo must not pass silently)."""
    if not isinstance(uri, str) or not _SCHEME.match(uri):
        raise ToolCallError(
            f"resource_updated needs a URI with a scheme, such as 'data://config', not {uri!r}"
        )
    return uri


def instance_uris(spec: ComponentSpec) -> Callable[[str | None], tuple[str, ...]]:
    """What a commit of the instance of a key updates, besides what its turn announced."""
    singleton = spec.key is None
    fixed = tuple(r.uri for r in spec.resources if singleton and not r.is_template)
    keyed = tuple(r.uri for r in spec.resources if not singleton and r.parameters == (spec.key,))
    serves_state = spec.state_resource

    def uris(key: str | None) -> tuple[str, ...]:
        found = (state_uri(spec.name, key),) if serves_state else ()
        if key is None:
            return found + fixed
        return found + tuple(_PLACEHOLDER.sub(quote(key), template) for template in keyed)

    return uris


class Updates:
    """The host's hand-off of updated URIs to its listeners, each on the loop it listened from."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: tuple[tuple[Listener, asyncio.AbstractEventLoop], ...] = ()

    def listen(self, listener: Listener) -> None:
        """Call `listener(uris)` on the running loop after every commit that updates resources."""
        self._listeners = (*self._listeners, (listener, asyncio.get_running_loop()))

    @property
    def heard(self) -> bool:
        """Whether anyone listens (in-process hosts have no transport, and skip the work)."""
        return bool(self._listeners)

    def post(self, uris: Iterable[str]) -> None:
        """Tell every listener that `uris` changed; from any thread, returns at once."""
        batch = tuple(dict.fromkeys(uris))
        if not batch:
            return
        for listener, loop in self._listeners:
            mailbox(loop).post(listener, batch)
