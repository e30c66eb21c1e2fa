"""The wasm layer against `load_wasm` directly: schemas, conversions, validation, traps, cache."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from mcp.types import CallToolResult

from statefulmcp.components import (
    ComponentError,
    ComponentSpec,
    InstanceLost,
    LoadOptions,
    ToolInputError,
    ToolSpec,
)
from statefulmcp.wasm import load_wasm

WAT = Path(__file__).parent / "wasm_components"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEFULMCP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def component(tmp_path: Path, wat: str, policy: str | None = None, **options: Any) -> ComponentSpec:
    """Load a WAT test component from a copy in `tmp_path`, with an optional policy beside it."""
    path = tmp_path / f"{wat}.wat"
    shutil.copy(WAT / f"{wat}.wat", path)
    if policy is not None:
        (tmp_path / f"{wat}.toml").write_text(policy)
    return load_wasm(path, LoadOptions(**options) if options else None)


def granted(spec: ComponentSpec) -> dict[str, Any]:
    """The grants and limits `list_components` shows (they may change at run time)."""
    assert spec.permissions is not None
    return spec.permissions.describe()


def tool(spec: ComponentSpec, name: str) -> ToolSpec:
    return next(t for t in spec.tools if t.name == name)


def call(spec: ComponentSpec, instance: Any, name: str, **arguments: Any) -> Any:
    """Validate, call and convert, as the host does; returns the structured content or the error."""
    t = tool(spec, name)
    result: CallToolResult = t.to_result(t.call(instance, t.validate(arguments)))
    if result.is_error:
        return ("error", result.structured_content, result.content[0].text)  # type: ignore[union-attr]
    if t.output_schema is not None:
        jsonschema.validate(result.structured_content, t.output_schema)
    return result.structured_content


@pytest.fixture(scope="module")
def types(tmp_path_factory: pytest.TempPathFactory) -> ComponentSpec:
    return component(tmp_path_factory.mktemp("types"), "types")


ROUND_TRIPS = [
    ("echo_bool", True),
    ("echo_u8", 255),
    ("echo_s8", -128),
    ("echo_u16", 65535),
    ("echo_s16", -32768),
    ("echo_u32", 2**32 - 1),
    ("echo_s32", -(2**31)),
    ("echo_u64", 2**64 - 1),
    ("echo_s64", -(2**63)),
    ("echo_f32", 1.5),
    ("echo_f64", -2.25e300),
    ("echo_char", "é"),
    ("echo_string", "héllo, wörld"),
    ("echo_bytes", [0, 1, 255]),
    ("echo_list", [1, 2, 3]),
    ("echo_list", []),
    ("echo_points", [{"x": 1, "y": -1, "label": "a"}, {"x": 2, "y": 3, "label": ""}]),
    ("echo_tuple", [7, "seven", True]),
    ("echo_option", 5),
    ("echo_option", None),
    ("echo_option_string", "some"),
    ("echo_option_string", None),
    ("echo_option_option", None),
    ("echo_option_option", {"some": None}),
    ("echo_option_option", {"some": 3}),
    ("echo_enum", "light-blue"),
    ("echo_flags", ["read", "exec"]),
    ("echo_flags", []),
    ("echo_variant", {"circle": 4}),
    ("echo_variant", {"label": "hi"}),
    ("echo_variant", {"empty": None}),
    ("echo_result", {"ok": 1}),
    ("echo_unit_result", {"ok": None}),
]


@pytest.mark.parametrize(("name", "value"), ROUND_TRIPS)
def test_every_wit_type_round_trips(types: ComponentSpec, name: str, value: Any) -> None:
    t = tool(types, name)
    jsonschema.validate({"x": value}, t.input_schema)
    got = call(types, types.new_instance(), name, x=value)
    if name == "echo_unit_result":
        assert got is None  # `result` with no payloads: success carries nothing
    elif name == "echo_result":
        assert got == {"result": value["ok"]}  # an ok result is its payload
    else:
        assert got == {"result": value}


def test_records_are_objects_with_wit_field_names(types: ComponentSpec) -> None:
    point = {"x": 1, "y": -2, "label": "hé"}
    assert call(types, types.new_instance(), "echo_record", x=point) == point
    assert call(types, types.new_instance(), "make_point", x=3, y=4, label="p") == {
        "x": 3,
        "y": 4,
        "label": "p",
    }
    assert (
        tool(types, "make_point").output_schema == tool(types, "echo_record").input_schema["properties"]["x"]
    )


def test_err_of_a_result_is_an_error_result_carrying_the_value(types: ComponentSpec) -> None:
    assert call(types, types.new_instance(), "echo_result", x={"err": "bad input"}) == (
        "error",
        {"error": "bad input"},
        "bad input",
    )


def test_schemas_follow_wit_types(types: ComponentSpec) -> None:
    def schema(name: str) -> dict[str, Any]:
        s: dict[str, Any] = tool(types, name).input_schema["properties"]["x"]
        return s

    assert schema("echo_u8") == {"type": "integer", "minimum": 0, "maximum": 255}
    assert schema("echo_s64") == {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    assert schema("echo_f64") == {"type": "number"}
    assert schema("echo_bool") == {"type": "boolean"}
    assert schema("echo_char") == {"type": "string", "minLength": 1, "maxLength": 1}
    assert schema("echo_enum") == {"type": "string", "enum": ["red", "green", "light-blue"]}
    assert schema("echo_flags")["items"] == {"type": "string", "enum": ["read", "write", "exec"]}
    assert schema("echo_flags")["uniqueItems"] is True
    record = schema("echo_record")
    assert record["type"] == "object" and record["required"] == ["x", "y", "label"]
    assert record["additionalProperties"] is False
    assert schema("echo_tuple")["minItems"] == schema("echo_tuple")["maxItems"] == 3
    assert len(schema("echo_tuple")["prefixItems"]) == 3
    assert {"type": "null"} in schema("echo_option")["anyOf"]
    assert [next(iter(case["properties"])) for case in schema("echo_variant")["oneOf"]] == [
        "circle",
        "label",
        "empty",
    ]
    assert [next(iter(case["properties"])) for case in schema("echo_result")["oneOf"]] == ["ok", "err"]
    for t in types.tools:
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
        if t.output_schema is not None:
            assert t.output_schema["type"] == "object"
    assert tool(types, "echo_u8").output_schema == {
        "type": "object",
        "properties": {"result": {"type": "integer", "minimum": 0, "maximum": 255}},
        "required": ["result"],
    }
    assert tool(types, "nothing").output_schema is None


def test_tools_include_interface_functions_disambiguated_by_interface(types: ComponentSpec) -> None:
    names = {t.name for t in types.tools}
    assert {"scale", "left_which", "right_which", "echo_u8", "make_point"} <= names
    assert "which" not in names
    assert call(types, types.new_instance(), "scale", x=6, factor=7) == {"result": 42}
    assert call(types, types.new_instance(), "left_which") == {"result": 1}
    assert call(types, types.new_instance(), "right_which") == {"result": 2}
    assert types.name == "types" and types.durability == "memory" and not types.stateful


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


BAD_ARGUMENTS = [
    ("echo_u8", {"x": 256}, "field 'x': 256 is out of range for u8"),
    ("echo_u8", {"x": -1}, "field 'x': -1 is out of range for u8"),
    ("echo_s8", {"x": 128}, "out of range for s8"),
    ("echo_u64", {"x": 2**64}, "out of range for u64"),
    ("echo_u32", {"x": True}, "field 'x': expected an integer"),
    ("echo_u32", {"x": 1.5}, "expected an integer"),
    ("echo_u32", {"x": "1"}, "expected an integer"),
    ("echo_u32", {}, "field 'x': missing required argument"),
    ("echo_u32", {"x": 1, "y": 2}, "field 'y': unknown argument"),
    ("echo_bool", {"x": 1}, "expected a boolean"),
    ("echo_char", {"x": "ab"}, "expected a single character"),
    ("echo_string", {"x": None}, "expected a string"),
    ("echo_bytes", {"x": [1, 256]}, "field 'x[1]': 256 is out of range for u8"),
    ("echo_list", {"x": {"a": 1}}, "expected an array"),
    ("echo_record", {"x": {"x": 1, "y": "2", "label": "l"}}, "field 'x.y': expected an integer"),
    ("echo_record", {"x": {"x": 1, "label": "l"}}, "missing required field 'y'"),
    ("echo_record", {"x": {"x": 1, "y": 2, "label": "l", "z": 0}}, "unknown field 'z'"),
    ("echo_points", {"x": [{"x": 1, "y": 2, "label": 3}]}, "field 'x[0].label': expected a string"),
    ("echo_tuple", {"x": [1, "a"]}, "expected an array of 3 items"),
    ("echo_option", {"x": -5}, "out of range for u32"),
    ("echo_option_option", {"x": 3}, 'expected null or {"some": ...}'),
    ("echo_enum", {"x": "blue"}, "expected one of ['red', 'green', 'light-blue']"),
    ("echo_flags", {"x": ["read", "read"]}, "flag 'read' given twice"),
    ("echo_flags", {"x": ["fly"]}, "field 'x[0]'"),
    ("echo_variant", {"x": {"square": 1}}, "unknown case 'square'"),
    ("echo_variant", {"x": {"circle": 1, "label": "a"}}, "exactly one of the keys"),
    ("echo_variant", {"x": {"empty": 1}}, "field 'x.empty': this case carries no value"),
    ("echo_result", {"x": {"ok": -1}}, "field 'x.ok': -1 is out of range for u32"),
    ("echo_record", {"x": {"x": 1, "y": 2, "label": "a\ud800b"}}, "lone surrogate (U+D800 at index 1)"),
    ("echo_enum", {"x": _deep(2000)}, "expected one of ['red', 'green', 'light-blue'], got array"),
    ("echo_flags", {"x": [_deep(2000)]}, "field 'x[0]': expected one of"),
    ("echo_option", {"x": 10**5000}, "number is out of range for u32"),
]


@pytest.mark.parametrize(("name", "arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_the_call_naming_the_field(
    types: ComponentSpec, name: str, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolInputError, match=r"^field ") as err:
        tool(types, name).validate(arguments)
    assert message in str(err.value)


def test_stateless_instances_start_with_fresh_memory(tmp_path: Path) -> None:
    counter = component(tmp_path, "counter")
    assert not counter.stateful
    assert call(counter, counter.new_instance(), "add", session="s", n=5) == {"result": 5}
    assert call(counter, counter.new_instance(), "add", session="s", n=5) == {"result": 5}


def test_one_instance_keeps_its_linear_memory_between_calls(tmp_path: Path) -> None:
    counter = component(tmp_path, "counter", stateful=True, key="session")
    assert (counter.stateful, counter.key, counter.durability) == (True, "session", "memory")
    a, b = counter.new_instance(), counter.new_instance()
    assert call(counter, a, "add", session="a", n=5) == {"result": 5}
    assert call(counter, a, "add", session="a", n=2) == {"result": 7}
    assert call(counter, b, "get", session="b") == {"result": 0}


TRAPS = [
    ("spin", {}, "exceeded its deadline of 0.3 s per call"),
    ("hog", {}, "memory cap"),
    ("crash", {}, "aborted (wasm `unreachable`)"),
    ("recurse", {"depth": 1}, "overflowed its call stack"),
]


@pytest.mark.parametrize(("name", "arguments", "cause"), TRAPS)
def test_a_trap_loses_the_instance_with_a_clear_cause(
    tmp_path: Path, name: str, arguments: dict[str, Any], cause: str
) -> None:
    counter = component(
        tmp_path,
        "counter",
        "[limits]\ndeadline_seconds = 0.3\nmemory_mib = 4\n",
        stateful=True,
        key="session",
    )
    instance = counter.new_instance()
    call(counter, instance, "add", session="s", n=3)
    with pytest.raises(InstanceLost) as err:
        call(counter, instance, name, session="s", **arguments)
    message = str(err.value)
    assert cause in message
    assert "in-memory state was lost" in message and "next call starts a fresh instance" in message
    assert "cannot enter" not in message and "backtrace" not in message
    assert call(counter, counter.new_instance(), "get", session="s") == {"result": 0}


def test_a_stateless_trap_does_not_talk_about_lost_state(tmp_path: Path) -> None:
    counter = component(tmp_path, "counter")
    with pytest.raises(InstanceLost, match="aborted") as err:
        call(counter, counter.new_instance(), "crash", session="s")
    assert "state" not in str(err.value)


def test_fuel_limit_stops_a_loop(tmp_path: Path) -> None:
    counter = component(tmp_path, "counter", "[limits]\nfuel = 100000\n")
    assert call(counter, counter.new_instance(), "add", session="s", n=1) == {"result": 1}
    with pytest.raises(InstanceLost, match=r"ran out of fuel \(100000 units per call\)"):
        call(counter, counter.new_instance(), "spin", session="s")
    assert granted(counter)["limits"]["fuel"] == 100000


def test_details_show_grants_and_limits(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    policy = '[env]\nallow = ["HOME"]\n[[dir]]\nhost = "data"\nguest = "/data"\nmode = "read-only"\n'
    counter = component(tmp_path, "counter", policy)
    details = granted(counter)
    assert details["dirs"] == [{"host": str(tmp_path / "data"), "guest": "/data", "mode": "read-only"}]
    assert details["env"] == ["HOME"]
    assert details["network"] == "denied"
    assert details["limits"] == {
        "deadline_seconds": 10.0,
        "fuel": None,
        "memory_mib": 64,
        "memories": 1,
        "table_elements": 50_000,
        "instances": 16,
    }


def test_policy_sets_load_defaults_and_load_options_win(tmp_path: Path) -> None:
    policy = 'stateful = true\nname = "tally"\n'
    spec = component(tmp_path, "counter", policy)
    assert (spec.name, spec.stateful, spec.key) == ("tally", True, None)
    spec = component(tmp_path, "counter", policy, name="count", key="session")
    assert (spec.name, spec.stateful, spec.key) == ("count", True, "session")
    assert [t.name for t in spec.tools][:2] == ["add", "get"]
    assert component(tmp_path, "counter", policy, stateful=False).stateful is False
    idle = component(tmp_path, "counter", "stateful = true\nidle_seconds = 30\n")
    assert idle.idle_seconds == 30.0


POLICY_ERRORS = [
    ("colour = 1\n", "colour: unknown key"),
    ("[limits]\ndeadline_seconds = -1\n", "limits.deadline_seconds: must be positive"),
    ("[limits]\nmemory_mib = '64'\n", "limits.memory_mib: must be a whole number of MiB"),
    ('[[dir]]\nhost = "."\nguest = "/data"\n', 'dir[0].mode: is required: say "read-only" or "read-write"'),
    ('[[dir]]\nhost = "missing"\nguest = "/d"\nmode = "read-only"\n', "dir[0].host:"),
    ("stateful = [\n", "cannot read the policy"),
    ("idle_seconds = 0\n", "idle_seconds must be a finite positive number of seconds"),
    ("idle_seconds = 'soon'\n", "idle_seconds: must be a number of seconds"),
]


@pytest.mark.parametrize(("policy", "message"), POLICY_ERRORS)
def test_a_bad_policy_fails_the_load_naming_the_file(tmp_path: Path, policy: str, message: str) -> None:
    with pytest.raises(ComponentError, match=r"counter\.toml") as err:
        component(tmp_path, "counter", policy)
    assert message in str(err.value)


def test_yaml_policies_work_too(tmp_path: Path) -> None:
    (tmp_path / "counter.yaml").write_text("stateful: true\nkey: session\nlimits:\n  memory_mib: 8\n")
    spec = component(tmp_path, "counter")
    assert spec.stateful and spec.key == "session" and granted(spec)["limits"]["memory_mib"] == 8


def test_a_key_the_functions_lack_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="has no 'user' parameter; add `user: string`"):
        component(tmp_path, "counter", stateful=True, key="user")


def test_handles_default_the_key_to_session(tmp_path: Path) -> None:
    spec = component(tmp_path, "counter", stateful=True, handles=True)
    assert spec.handles and spec.key == "session"


def test_bad_files_fail_the_load_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"missing\.wasm: cannot read the component"):
        load_wasm(tmp_path / "missing.wasm")
    (tmp_path / "junk.wasm").write_bytes(b"hello")
    with pytest.raises(ComponentError, match="not a WebAssembly file"):
        load_wasm(tmp_path / "junk.wasm")
    (tmp_path / "module.wasm").write_bytes(b"\0asm\x01\0\0\0")
    with pytest.raises(ComponentError, match=r"not a WebAssembly component .*wasm-tools component new"):
        load_wasm(tmp_path / "module.wasm")
    with pytest.raises(ComponentError, match="not persisted"):
        component(tmp_path, "counter", durability="turn")


def test_compiled_components_are_cached_and_a_corrupt_entry_is_recompiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    cache = tmp_path / "cache"
    monkeypatch.setenv("STATEFULMCP_CACHE_DIR", str(cache))
    # Compiled code is shared in memory while anything holds it, and an earlier test's trap can
    # leave it held by a reference cycle (pytest's ExceptionInfo and the traceback's frames)
    # until the collector runs: collect now, so that this load compiles and writes the entry.
    gc.collect()
    component(tmp_path, "counter")
    (entry,) = (cache / "wasm").glob("*.cwasm")
    stamp = entry.stat().st_mtime_ns
    component(tmp_path, "counter")
    assert entry.stat().st_mtime_ns == stamp
    entry.write_bytes(entry.read_bytes()[:100] + b"garbage")
    spec = component(tmp_path, "counter")
    assert call(spec, spec.new_instance(), "add", session="s", n=1) == {"result": 1}
    assert entry.stat().st_mtime_ns != stamp


def test_processes_compiling_one_component_at_once_compile_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas started together with a cold cache: one compiles, the others wait and read its entry."""
    from statefulmcp.wasm import cache

    monkeypatch.setenv("STATEFULMCP_CACHE_DIR", str(tmp_path / "cache"))
    source = (WAT / "counter.wat").read_bytes()
    lock_path = cache.entry_path(source, fuel=False).with_suffix(".cwasm.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    script = (
        "import sys; from statefulmcp.wasm import cache; "
        "cache.compile_component(open(sys.argv[1], 'rb').read(), fuel=False); "
        "print(cache.counts.compiled, cache.counts.deserialized)"
    )
    with lock_path.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(WAT / "counter.wat")], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        # Both are blocked on the entry's lock (the kernel lists waiters with "->").
        inode = f":{os.fstat(held.fileno()).st_ino} "
        deadline = time.monotonic() + 60
        while (
            sum("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()) < 2
        ):
            assert time.monotonic() < deadline, "the processes never waited for the entry's lock"
            assert all(p.poll() is None for p in procs), "a process compiled without waiting"
            time.sleep(0.01)
        fcntl.flock(held, fcntl.LOCK_UN)
    outcomes = sorted(p.communicate(timeout=60)[0].split() for p in procs)
    assert outcomes == [["0", "1"], ["1", "0"]], "compiled once, read from the cache once"


def test_the_epoch_ticker_runs_only_while_calls_do_and_then_ends(tmp_path: Path) -> None:
    from statefulmcp.wasm import engine as wasm_engine

    counter = component(tmp_path, "counter", stateful=True, key="session")
    instance = counter.new_instance()
    assert call(counter, instance, "add", session="a", n=1) == {"result": 1}
    ticker = wasm_engine.ticker
    for thread in [t for t in threading.enumerate() if t.name == "statefulmcp-wasm-epoch"]:
        thread.join(wasm_engine.LINGER_SECONDS + 10)  # it ends by itself once no call runs
    assert not [t for t in threading.enumerate() if t.name == "statefulmcp-wasm-epoch"]
    ticks = ticker.ticks
    assert call(counter, instance, "add", session="a", n=1) == {"result": 2}  # and comes back
    for thread in [t for t in threading.enumerate() if t.name == "statefulmcp-wasm-epoch"]:
        thread.join(wasm_engine.LINGER_SECONDS + 10)
    assert ticker.ticks - ticks < (wasm_engine.LINGER_SECONDS + 10) / wasm_engine.TICK_SECONDS


def test_memory_and_tables_are_bounded_per_instance_not_per_memory(tmp_path: Path) -> None:
    """Before: a component instantiating its core module four times held four times its
    `memory_mib`, and tables grew without limit. Now its memories share one cap."""
    with pytest.raises(
        ComponentError, match=r"more linear memories than its policy allows \(limits\.memories = 1\)"
    ):
        component(tmp_path, "hoard")
    policy = "[limits]\nmemory_mib = 8\nmemories = 4\ntable_elements = 1000\n"
    spec = component(tmp_path, "hoard", policy)
    instance = spec.new_instance()
    instance.start()
    # 8 MiB over four memories: 2 MiB (32 pages) each, one page in use from the start.
    assert call(spec, instance, "grow_a", pages=31) == {"result": 1}
    assert call(spec, instance, "grow_a", pages=1) == {"result": -1}  # refused: a's share is used
    for other in ("grow_b", "grow_c", "grow_d"):
        assert call(spec, instance, other, pages=31) == {"result": 1}
        assert call(spec, instance, other, pages=1) == {"result": -1}  # 8 MiB in all, never more
    assert call(spec, instance, "grow_table", entries=999) == {"result": 1}
    assert call(spec, instance, "grow_table", entries=1) == {"result": -1}  # 1000 entries per table
    assert granted(spec)["limits"]["memories"] == 4 and granted(spec)["limits"]["table_elements"] == 1000


def test_loads_of_the_same_component_share_its_compiled_code_until_the_last_is_dropped(
    tmp_path: Path,
) -> None:
    """Before: every load deserialized the compiled code again (about 36 MiB for a
    componentize-py component), so 100 loads of one file held 100 copies."""
    import gc

    from statefulmcp.wasm import cache

    one = component(tmp_path, "counter", name="one")
    before = (cache.counts.compiled, cache.counts.deserialized, cache.counts.shared)
    two = component(tmp_path, "counter", name="two", stateful=True)
    assert (cache.counts.compiled, cache.counts.deserialized) == before[:2]
    assert cache.counts.shared == before[2] + 1
    assert call(two, two.new_instance(), "add", session="s", n=2) == {"result": 2}
    assert call(one, one.new_instance(), "add", session="s", n=3) == {"result": 3}
    changed = tmp_path / "counter.wat"
    changed.write_text(changed.read_text() + "\n;; changed\n")
    compiled = cache.counts.compiled
    load_wasm(changed, LoadOptions(name="three"))
    assert cache.counts.compiled == compiled + 1, "a changed file is compiled again"
    del one, two
    gc.collect()
    deserialized = cache.counts.deserialized
    spec = load_wasm(WAT / "counter.wat", LoadOptions(name="four"))
    assert cache.counts.deserialized == deserialized + 1, "freed with its last load, then read from disk"
    assert call(spec, spec.new_instance(), "add", session="s", n=1) == {"result": 1}
