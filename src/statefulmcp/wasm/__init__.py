"""WebAssembly components as tools: sandboxed, stateless or stateful.

`load_wasm(path, options)` is the one entry point: the host calls it for any `.wasm` path and
serves the returned spec like any other component. See docs/wasm.md.
"""

from statefulmcp.wasm.loader import load_wasm

__all__ = ["load_wasm"]
