"""statefulmcp: serve Python and WebAssembly components as MCP tools, stateless or stateful.

The public API is this module's names and nothing else; everything in submodules is private.
"""

from statefulmcp._errors import (
    ActivationError,
    ClientCapabilityError,
    ComponentError,
    HostStateError,
    InstanceLost,
    RemoteCallError,
    StatefulMCPError,
    StateValueError,
    StoreError,
    ToolCallError,
    ToolInputError,
    ToolResultError,
)
from statefulmcp._options import LoadOptions
from statefulmcp.components import Audio, Image
from statefulmcp.context import Context, Elicitation
from statefulmcp.host import ComponentInfo, Host
from statefulmcp.remote import Remote

# isort: off
# Last: importing the host imports the submodule `statefulmcp.background`, which would otherwise
# shadow the decorator of the same name on this package.
from statefulmcp.components import Stateful, background, component, prompt, resource, tool
# isort: on

__all__ = [
    "ActivationError",
    "Audio",
    "ClientCapabilityError",
    "ComponentError",
    "ComponentInfo",
    "Context",
    "Elicitation",
    "Host",
    "HostStateError",
    "Image",
    "InstanceLost",
    "LoadOptions",
    "Remote",
    "RemoteCallError",
    "StateValueError",
    "Stateful",
    "StatefulMCPError",
    "StoreError",
    "ToolCallError",
    "ToolInputError",
    "ToolResultError",
    "background",
    "component",
    "prompt",
    "resource",
    "tool",
]
