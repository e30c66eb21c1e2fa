"""The one exception tree of statefulmcp.

Every error the host raises on purpose is a `StatefulMCPError`, and its message is written for
the person who reads it: what happened, and what to do next. The public ones are re-exported
from `statefulmcp`::

    StatefulMCPError
    ├── ComponentError        a component cannot be loaded as written (bad declaration, import error)
    ├── ToolCallError         a tool call failed; the message is what an MCP client sees
    │   └── ClientCapabilityError the caller's client cannot answer what the tool asked (elicitation, sampling)
    ├── ToolInputError        the caller's arguments do not fit the tool's input schema
    ├── ToolResultError       a tool returned a value that cannot be sent as JSON
    ├── StateValueError       a turn wrote a non-JSON value to `self.state`
    ├── InstanceLost          an instance can never be used again (a WebAssembly trap)
    ├── NetworkDenied         a WebAssembly component's outgoing request is outside its policy
    ├── ActivationError       an instance's `on_activate` failed
    ├── StoreError            the state store cannot be opened or written
    │   └── StaleInstanceError    memory can no longer be trusted (fenced, or a commit in doubt)
    ├── RemoteCallError       a tool on another server failed or did not answer
    └── HostStateError        the host was used outside its life cycle (call before start)

`ToolInputError` and `ToolResultError` also subclass `ValueError` / `TypeError`, and
`StateValueError` `TypeError`, so code catching the builtin kinds keeps working.
"""

from __future__ import annotations


class StatefulMCPError(Exception):
    """The base of every error statefulmcp raises on purpose."""


class ComponentError(StatefulMCPError):
    """A component cannot be loaded as written; the message says what to change."""


class ToolCallError(StatefulMCPError):
    """A tool call failed; the message says why and is what an MCP client sees as the error."""


class ClientCapabilityError(ToolCallError):
    """A tool asked its caller's client for something (`ctx.elicit`, `ctx.sample`) that the client
    did not declare it can answer, or there is no client (an in-process `Host.call`).

    Raised before anything is committed or sent, so a tool may catch it and carry on without the
    answer. Uncaught, an MCP client gets the SDK's missing-capability error (-32021), whose
    `requiredCapabilities` is `required` (the capabilities as the spec writes them).
    """

    def __init__(self, message: str, required: dict[str, object]) -> None:
        super().__init__(message)
        self.required = required


class ToolInputError(StatefulMCPError, ValueError):
    """The caller's arguments do not fit the tool's input schema.

    The message names each offending field and what is wrong with it (`price: Input should be a
    valid number`); the host prefixes it with the tool's full name.
    """


class ToolResultError(StatefulMCPError, TypeError):
    """A tool returned a value that cannot be sent as JSON."""


class StateValueError(StatefulMCPError, TypeError):
    """A turn wrote a value to `self.state` that is not JSON; the message names the key."""


class InstanceLost(StatefulMCPError, RuntimeError):
    """Raised by a tool call when its instance can never be used again (a WebAssembly trap, say).

    The host drops the instance, so the next call with the same key gets a fresh one, and the
    caller gets this error's message.
    """


class NetworkDenied(StatefulMCPError):
    """A WebAssembly component's outgoing HTTP request was refused by its policy.

    Never raised to a caller: the component gets the message as its request's error, and the log
    gets it too. It names the host and what to grant.
    """


class ActivationError(StatefulMCPError):
    """An instance's `on_activate` raised; the instance was dropped and the next call retries."""


class StoreError(StatefulMCPError):
    """The store cannot be opened or written; the message names the file and what to do."""


class StaleInstanceError(StoreError):
    """A commit was refused or its outcome is unknown, so the instance's memory may differ from
    the store: another replica owns the instance now (a fenced commit), or the connection broke
    during the commit. The instance is dropped; the next call activates it from the store."""


class RemoteCallError(StatefulMCPError):
    """A remote tool failed, timed out or could not be reached; the message says which."""


class HostStateError(StatefulMCPError, RuntimeError):
    """The host was used outside its life cycle: before `start()` or after `aclose()`."""
