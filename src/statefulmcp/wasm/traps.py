"""Turning a wasm trap into the one error a caller can act on.

After a trap wasmtime refuses to enter the instance again ("cannot enter component instance"),
so a trap always costs the instance. The caller is told why in words (deadline, fuel, memory,
stack, abort) rather than with a wasm backtrace; the backtrace goes to the log.
"""

from __future__ import annotations

import wasmtime

from statefulmcp.wasm.policy import MAX_TABLES, Limits


def cause(error: wasmtime.WasmtimeError, limits: Limits, stderr_tail: str) -> str:
    """What went wrong, as the end of the sentence "the component ...".

    wasmtime's C API reports a trap inside a component call as an error whose text ends with
    `wasm trap: <reason>`, with no trap code, so the reason is read from the text.
    """
    if isinstance(error, wasmtime.ExitTrap):
        return f"exited with status {error.code}"
    text = str(error)
    if "memory count too high" in text:
        return (
            f"has more linear memories than its policy allows (limits.memories = {limits.memories}); "
            "raise limits.memories if you trust it (memory_mib is then shared among its memories)"
        )
    if "table count too high" in text:
        return f"has more than {MAX_TABLES} tables, which no component needs; it was refused"
    if "resource limit exceeded" in text:
        first = text.strip().splitlines()[0]
        return (
            f"needs more than its policy's limits allow ({first}); raise limits.memory_mib or "
            "limits.table_elements if you trust it"
        )
    reason = next(
        (
            line.strip()[len("wasm trap:") :].strip()
            for line in reversed(text.splitlines())
            if line.strip().startswith("wasm trap:")
        ),
        None,
    )
    said = f" (the component's last words on stderr: {stderr_tail!r})" if stderr_tail else ""
    if reason is None:
        return f"failed: {text.strip().splitlines()[0] if text.strip() else 'unknown error'}{said}"
    if reason == "interrupt":
        return f"exceeded its deadline of {limits.deadline_seconds:g} s per call and was stopped"
    if "fuel" in reason:
        return f"ran out of fuel ({limits.fuel} units per call) and was stopped"
    if "call stack exhausted" in reason:
        return f"overflowed its call stack (unbounded recursion?){said}"
    if "unreachable" in reason:
        return (
            "aborted (wasm `unreachable`): a guest panic, or an allocation refused by its "
            f"{limits.memory_mib} MiB memory cap{said}"
        )
    return f"trapped: {reason}{said}"
