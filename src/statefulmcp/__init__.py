"""statefulmcp: serve Python and WebAssembly components as MCP tools, stateless or stateful.

The public API is this module's names and nothing else; everything in submodules is private.
"""

from statefulmcp.components import LoadOptions, background, component, tool
from statefulmcp.host import ComponentInfo, Host, ToolCallError
from statefulmcp.remote import Remote

__all__ = [
    "ComponentInfo",
    "Host",
    "LoadOptions",
    "Remote",
    "ToolCallError",
    "background",
    "component",
    "tool",
]
