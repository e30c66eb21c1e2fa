"""WebAssembly components: per-call latency, raw wasmtime vs statefulmcp, and RSS per instance.

For the tiny WAT counter and for the componentize-py notes component, one run interleaves:

- raw: a wasmtime `Func` called on one persistent Store, the floor any host pays;
- stateful: the spec's validate -> call -> to_result on one reused instance (what a stateful
  call costs the wasm layer, without the transport);
- stateless: the same with `new_instance()` per call (a fresh Store + instantiation).

RSS per live instance: start N instances (each has run one call; what a keyed component keeps
per key) and divide the RSS growth by N. RSS per load: load the same file N more times under
other names, keeping every load, and divide the RSS growth by N (the compiled code is shared, so
this is the tool table and policy of a load, not its code).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component as wc

from benchmarks.stats import median_ratio, summary
from statefulmcp.components import ComponentSpec, LoadOptions
from statefulmcp.wasm import cache as wasm_cache
from statefulmcp.wasm import engine as engines
from statefulmcp.wasm import load_wasm

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _raw_call(path: Path, export: str, args: list[Any]) -> Callable[[], Any]:
    """A wasmtime call on one persistent instance, with no statefulmcp code in the path."""
    # Compiled through the cache, so it shares the engine (epoch interruption on) it is bound to.
    component = wasm_cache.compile_component(path.read_bytes(), fuel=False)
    store = wasmtime.Store(engines.engine(False))
    store.set_epoch_deadline(2**40)
    store.set_wasi(wasmtime.WasiConfig())
    linker = wc.Linker(store.engine)
    linker.add_wasip2()
    instance = linker.instantiate(store, component)
    func = instance.get_func(store, export)
    assert func is not None
    return lambda: func(store, *args)


def _spec_call(
    spec: ComponentSpec, tool: str, arguments: dict[str, Any], *, fresh: bool
) -> Callable[[], Any]:
    t = next(t for t in spec.tools if t.name == tool)
    validate, call, to_result = t.validate, t.call, t.to_result
    if fresh:
        return lambda: to_result(call(spec.new_instance(), validate(arguments)))
    instance = spec.new_instance()
    return lambda: to_result(call(instance, validate(arguments)))


def _measure(methods: dict[str, Callable[[], Any]], rounds: int, batch: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in methods}
    medians: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():
        for _ in range(min(batch, 20)):
            fn()
    for _ in range(rounds):
        for name, fn in methods.items():
            times = []
            for _ in range(batch):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            samples[name] += times
            medians[name].append(sorted(times)[len(times) // 2])
    out: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    out["stateful_over_raw"] = median_ratio(list(zip(medians["stateful"], medians["raw"], strict=True)))
    out["stateless_over_stateful"] = median_ratio(
        list(zip(medians["stateless"], medians["stateful"], strict=True))
    )
    return out


def _rss_per_instance(spec: ComponentSpec, tool: str, arguments: dict[str, Any], n: int) -> float:
    t = next(t for t in spec.tools if t.name == tool)
    gc.collect()
    before = _rss_bytes()
    live = []
    for _ in range(n):
        instance = spec.new_instance()
        t.call(instance, t.validate(arguments))
        live.append(instance)
    gc.collect()
    per = (_rss_bytes() - before) / n
    del live
    return per


def _rss_per_load(path: Path, n: int) -> float:
    kept = [load_wasm(path, LoadOptions(name="warm"))]
    gc.collect()
    before = _rss_bytes()
    kept += [load_wasm(path, LoadOptions(name=f"copy_{i}")) for i in range(n)]
    gc.collect()
    per = (_rss_bytes() - before) / n
    del kept
    return per


def run(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(TESTS))
    from wasm_components.build import notes_component

    rounds, batch, n_instances, n_loads = (5, 100, 20, 5) if quick else (15, 300, 100, 20)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        counter_path = Path(tmp) / "counter.wasm"
        counter_path.write_bytes(wasmtime.wat2wasm((TESTS / "wasm_components" / "counter.wat").read_text()))
        counter = load_wasm(counter_path, LoadOptions(stateful=True))
        notes_path = notes_component()
        notes = load_wasm(notes_path, LoadOptions(stateful=True))
        cases: list[tuple[str, Any, Path, str, str, dict[str, Any], list[Any]]] = [
            ("wat_counter", counter, counter_path, "add", "add", {"session": "s", "n": 1}, ["s", 1]),
            ("componentize_py_notes", notes, notes_path, "get-env", "get_env", {"name": "HOME"}, ["HOME"]),
        ]
        for label, spec, path, export, tool, arguments, raw_args in cases:
            figures = _measure(
                {
                    "raw": _raw_call(path, export, raw_args),
                    "stateful": _spec_call(spec, tool, arguments, fresh=False),
                    "stateless": _spec_call(spec, tool, arguments, fresh=True),
                },
                rounds,
                batch if label == "wat_counter" else batch // 3,
            )
            figures["rss_per_stateful_instance_kib"] = (
                _rss_per_instance(spec, tool, arguments, n_instances) / 1024
            )
            figures["rss_per_load_kib"] = _rss_per_load(path, n_loads) / 1024
            results[label] = figures
    results["targets"] = [
        {
            "target": f"stateful call <= 1.5x a raw wasmtime call on a persistent instance ({label})",
            "value": f"{results[label]['stateful_over_raw']:.2f}x",
            "met": results[label]["stateful_over_raw"] <= 1.5,
        }
        for label in ("wat_counter", "componentize_py_notes")
    ]
    speedup = results["componentize_py_notes"]["stateless_over_stateful"]
    results["targets"].append(
        {
            "target": "stateful >= 10x faster than stateless (componentize_py_notes)",
            "value": f"{speedup:.1f}x",
            "met": speedup >= 10,
        }
    )
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv), indent=2))
