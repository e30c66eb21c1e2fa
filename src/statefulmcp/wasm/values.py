"""WIT types as JSON: the schema a client sees, and values converted both ways.

Every WIT value type becomes a `Codec` that knows three things: its JSON schema, how to check a
JSON value and lower it to what `wasmtime` expects (`lower`), and how to lift what `wasmtime`
returns back to JSON (`lift`). Checking and lowering are one pass, because both walk the same
value and this runs on every call; wasmtime does not range-check integers, so the check cannot
be skipped.

JSON shapes, chosen so every value has exactly one spelling:

- integers carry `minimum`/`maximum`; floats are numbers; `char` is a one-character string;
- `list<T>` is an array (`list<u8>` too: an array of bytes, never base64);
- a record is an object keyed by the WIT field names, all fields required;
- a tuple is a fixed-length array (`prefixItems`);
- `option<T>` is `T` or `null`; when `T` is itself an option, `some` is spelled `{"some": T}`;
- an enum is one of its case names; flags are an array of unique flag names;
- a variant is an object with exactly one key, the case name, whose value is the payload
  (`null` for a case without one); `result<T, E>` is the variant `{"ok": T}` | `{"err": E}`.

wasmtime-py itself spells variant-like values as `Variant(tag, payload)` only when the cases'
Python types overlap, and as the bare payload otherwise; `_wasm_tagged` mirrors that rule.
"""

from __future__ import annotations

import math
from typing import Any

from wasmtime import component as wc

Schema = dict[str, Any]


class Invalid(ValueError):
    """A JSON value does not fit a WIT type; `path` names where, e.g. `point.label`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Unsupported(TypeError):
    """A WIT type with no JSON form (resources, streams, futures, error-context)."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_SHOWN_CHARS = 40


def shown(value: Any) -> str:
    """A short spelling of a refused value for an error message.

    Strings are quoted and cut to `_SHOWN_CHARS`; anything else is named by its JSON kind, never
    repr'd: a caller's value may be megabytes long or nested thousands deep (repr would raise
    `RecursionError`), and an error message must be safe to build from any input.
    """
    if isinstance(value, str):
        cut = value if len(value) <= _SHOWN_CHARS else f"{value[:_SHOWN_CHARS]}..."
        return repr(cut)
    if isinstance(value, float) or value is None or (isinstance(value, int) and value.bit_length() <= 128):
        return repr(value)
    return _json_kind(value)


class Codec:
    """How one WIT type looks in JSON, and how its values cross into and out of wasm."""

    __slots__ = ("schema",)
    schema: Schema

    def lower(self, value: Any, path: str) -> Any:
        """Check a JSON value against the type and return the value wasmtime expects."""
        raise NotImplementedError

    def lift(self, value: Any) -> Any:
        """Turn a value wasmtime returned into JSON data; scalars already are."""
        return value

    def wasm_classes(self) -> set[type]:
        """The Python types wasmtime-py uses for this WIT type (see `_wasm_tagged`)."""
        raise NotImplementedError


class _Bool(Codec):
    __slots__ = ()

    def __init__(self) -> None:
        self.schema = {"type": "boolean"}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise Invalid(path, f"expected a boolean, got {_json_kind(value)}")
        return value

    def wasm_classes(self) -> set[type]:
        return {bool}


class _Int(Codec):
    __slots__ = ("hi", "lo", "wit")

    def __init__(self, wit: str, lo: int, hi: int) -> None:
        self.wit, self.lo, self.hi = wit, lo, hi
        self.schema = {"type": "integer", "minimum": lo, "maximum": hi}

    def lower(self, value: Any, path: str) -> Any:
        if type(value) is not int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise Invalid(path, f"expected an integer ({self.wit}), got {_json_kind(value)}")
        if not self.lo <= value <= self.hi:
            raise Invalid(path, f"{shown(value)} is out of range for {self.wit} ({self.lo}..{self.hi})")
        return value

    def wasm_classes(self) -> set[type]:
        return {int}


_F32_MAX = 3.4028234663852886e38


class _Float(Codec):
    __slots__ = ("wit",)

    def __init__(self, wit: str) -> None:
        self.wit = wit
        self.schema = {"type": "number"}

    def lower(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(path, f"expected a number ({self.wit}), got {_json_kind(value)}")
        number = float(value)
        if self.wit == "f32" and math.isfinite(number) and abs(number) > _F32_MAX:
            raise Invalid(path, f"{value} is out of range for f32")
        return number

    def lift(self, value: Any) -> Any:
        # JSON has no NaN or infinity; null is the one honest spelling of "not a number".
        return value if math.isfinite(value) else None

    def wasm_classes(self) -> set[type]:
        return {float}


class _Char(Codec):
    __slots__ = ()

    def __init__(self) -> None:
        self.schema = {"type": "string", "minLength": 1, "maxLength": 1}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or len(value) != 1:
            raise Invalid(path, f"expected a single character, got {_json_kind(value)}")
        if 0xD800 <= ord(value) <= 0xDFFF:
            raise Invalid(path, "a surrogate code point is not a char")
        return value

    def wasm_classes(self) -> set[type]:
        return {str}


class _String(Codec):
    __slots__ = ()

    def __init__(self) -> None:
        self.schema = {"type": "string"}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise Invalid(path, f"expected a string, got {_json_kind(value)}")
        if not value.isascii():
            _check_encodable(value, path)
        return value

    def wasm_classes(self) -> set[type]:
        return {str}


def _check_encodable(value: str, path: str) -> None:
    """Wasm strings are UTF-8, which cannot spell a lone surrogate (JSON's `"\\ud800"` can)."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise Invalid(
            path,
            f"contains a lone surrogate (U+{ord(value[exc.start]):04X} at index {exc.start}), which "
            "is not valid Unicode text",
        ) from None


class _List(Codec):
    __slots__ = ("element",)

    def __init__(self, element: Codec) -> None:
        self.element = element
        self.schema = {"type": "array", "items": element.schema}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise Invalid(path, f"expected an array, got {_json_kind(value)}")
        lower = self.element.lower
        return [lower(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def lift(self, value: Any) -> Any:
        lift = self.element.lift
        return [lift(item) for item in value]

    def wasm_classes(self) -> set[type]:
        return {list}


class _Bytes(_List):
    """`list<u8>`: an array of bytes in JSON, `bytes` in wasmtime-py."""

    __slots__ = ()

    def lower(self, value: Any, path: str) -> Any:
        return bytes(super().lower(value, path))

    def lift(self, value: Any) -> Any:
        return list(value)

    def wasm_classes(self) -> set[type]:
        return {bytes}


class _Record(Codec):
    __slots__ = ("fields",)

    def __init__(self, fields: list[tuple[str, Codec]]) -> None:
        self.fields = fields
        self.schema = {
            "type": "object",
            "properties": {name: property_schema(codec) for name, codec in fields},
            "required": [name for name, codec in fields if not is_optional(codec)],
            "additionalProperties": False,
        }

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise Invalid(path, f"expected an object, got {_json_kind(value)}")
        record = wc.Record()
        given = 0
        for name, codec in self.fields:
            if name in value:
                given += 1
            elif not is_optional(codec):
                raise Invalid(path, f"missing required field {name!r}")
            setattr(record, name, codec.lower(value.get(name), f"{path}.{name}"))
        if len(value) != given:
            extra = sorted(set(value) - {name for name, _ in self.fields})
            raise Invalid(path, f"unknown field {shown(extra[0])}")
        return record

    def lift(self, value: Any) -> Any:
        return {name: codec.lift(getattr(value, name)) for name, codec in self.fields}

    def wasm_classes(self) -> set[type]:
        return {wc.Record}


class _Tuple(Codec):
    __slots__ = ("elements",)

    def __init__(self, elements: list[Codec]) -> None:
        self.elements = elements
        n = len(elements)
        self.schema = {
            "type": "array",
            "prefixItems": [codec.schema for codec in elements],
            "items": False,
            "minItems": n,
            "maxItems": n,
        }

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, list) or len(value) != len(self.elements):
            raise Invalid(path, f"expected an array of {len(self.elements)} items, got {_json_kind(value)}")
        return tuple(
            codec.lower(item, f"{path}[{i}]")
            for i, (codec, item) in enumerate(zip(self.elements, value, strict=True))
        )

    def lift(self, value: Any) -> Any:
        return [codec.lift(item) for codec, item in zip(self.elements, value, strict=True)]

    def wasm_classes(self) -> set[type]:
        return {tuple}


class _Enum(Codec):
    __slots__ = ("names",)

    def __init__(self, names: list[str]) -> None:
        self.names = frozenset(names)
        self.schema = {"type": "string", "enum": names}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or value not in self.names:
            raise Invalid(path, f"expected one of {self.schema['enum']}, got {shown(value)}")
        return value

    def wasm_classes(self) -> set[type]:
        return {str}


class _Flags(Codec):
    __slots__ = ("order",)

    def __init__(self, names: list[str]) -> None:
        self.order = {name: i for i, name in enumerate(names)}
        self.schema = {"type": "array", "items": {"type": "string", "enum": names}, "uniqueItems": True}

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise Invalid(path, f"expected an array of flag names, got {_json_kind(value)}")
        flags = set()
        for i, name in enumerate(value):
            if not isinstance(name, str) or name not in self.order:
                raise Invalid(f"{path}[{i}]", f"expected one of {list(self.order)}, got {shown(name)}")
            if name in flags:
                raise Invalid(f"{path}[{i}]", f"flag {name!r} given twice")
            flags.add(name)
        return flags

    def lift(self, value: Any) -> Any:
        return sorted(value, key=self.order.__getitem__)

    def wasm_classes(self) -> set[type]:
        return {set}


def _wasm_tagged(cases: list[tuple[str, Codec | None]]) -> bool:
    """Whether wasmtime-py spells this variant as `Variant(tag, payload)` or as the bare payload.

    The same rule as `wasmtime.component._types.VariantLikeType._tagged`: tagged exactly when
    two cases share a Python type (a case without payload counts as `object`).
    """
    seen: set[type] = set()
    for _, codec in cases:
        classes = {object} if codec is None else codec.wasm_classes()
        if classes & seen:
            return True
        seen |= classes
    return False


class _Variant(Codec):
    """Variants and results: `{"case": payload}` in JSON."""

    __slots__ = ("by_class", "by_name", "is_result", "none_case", "tagged")

    def __init__(self, cases: list[tuple[str, Codec | None]], *, is_result: bool = False) -> None:
        self.by_name = dict(cases)
        self.is_result = is_result
        self.tagged = _wasm_tagged(cases)
        self.none_case: str | None = None
        self.by_class: dict[type, tuple[str, Codec]] = {}
        for name, codec in cases:
            if codec is None or object in codec.wasm_classes():
                self.none_case = name
            if codec is not None:
                self.by_class.update({cls: (name, codec) for cls in codec.wasm_classes()})
        self.schema = {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {name: {"type": "null"} if codec is None else codec.schema},
                    "required": [name],
                    "additionalProperties": False,
                }
                for name, codec in cases
            ]
        }

    def lower(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict) or len(value) != 1:
            raise Invalid(path, f"expected an object with exactly one of the keys {list(self.by_name)}")
        ((name, payload),) = value.items()
        if name not in self.by_name:
            raise Invalid(path, f"unknown case {shown(name)}; expected one of {list(self.by_name)}")
        codec = self.by_name[name]
        if codec is None:
            if payload is not None:
                raise Invalid(f"{path}.{name}", "this case carries no value; pass null")
            return wc.Variant(name) if self.tagged else None
        lowered = codec.lower(payload, f"{path}.{name}")
        return wc.Variant(name, lowered) if self.tagged else lowered

    def case_of(self, value: Any) -> tuple[str, Any]:
        """The case name and the payload, as wasmtime-py returned them, of a lifted value."""
        if self.tagged:
            return value.tag, value.payload
        if value is None and self.none_case is not None:
            return self.none_case, None
        return self.by_class[type(value)][0], value

    def lift(self, value: Any) -> Any:
        name, payload = self.case_of(value)
        codec = self.by_name[name]
        return {name: None if codec is None else codec.lift(payload)}

    def wasm_classes(self) -> set[type]:
        if self.tagged:
            return {wc.Variant}
        classes: set[type] = set()
        for codec in self.by_name.values():
            classes |= {object} if codec is None else codec.wasm_classes()
        return classes


class _Option(Codec):
    __slots__ = ("boxed", "payload", "tagged")

    def __init__(self, payload: Codec) -> None:
        self.payload = payload
        self.tagged = _wasm_tagged([("none", None), ("some", payload)])
        # JSON null cannot say both "none" and "some(none)", so a nested option boxes `some`.
        self.boxed = isinstance(payload, _Option)
        some = (
            {
                "type": "object",
                "properties": {"some": payload.schema},
                "required": ["some"],
                "additionalProperties": False,
            }
            if self.boxed
            else payload.schema
        )
        self.schema = {"anyOf": [some, {"type": "null"}]}

    def lower(self, value: Any, path: str) -> Any:
        if value is None:
            return wc.Variant("none") if self.tagged else None
        if self.boxed:
            if not isinstance(value, dict) or set(value) != {"some"}:
                raise Invalid(path, 'expected null or {"some": ...}')
            value, path = value["some"], f"{path}.some"
        lowered = self.payload.lower(value, path)
        return wc.Variant("some", lowered) if self.tagged else lowered

    def lift(self, value: Any) -> Any:
        if self.tagged:
            if value.tag == "none":
                return None
            value = value.payload
        elif value is None:
            return None
        lifted = self.payload.lift(value)
        return {"some": lifted} if self.boxed else lifted

    def wasm_classes(self) -> set[type]:
        return {wc.Variant} if self.tagged else {object} | self.payload.wasm_classes()


_INTS: dict[type, tuple[str, int, int]] = {
    wc.U8: ("u8", 0, 2**8 - 1),
    wc.U16: ("u16", 0, 2**16 - 1),
    wc.U32: ("u32", 0, 2**32 - 1),
    wc.U64: ("u64", 0, 2**64 - 1),
    wc.S8: ("s8", -(2**7), 2**7 - 1),
    wc.S16: ("s16", -(2**15), 2**15 - 1),
    wc.S32: ("s32", -(2**31), 2**31 - 1),
    wc.S64: ("s64", -(2**63), 2**63 - 1),
}


def codec_for(ty: wc.ValType) -> Codec:
    """The codec of a WIT type; raises `Unsupported` for types with no JSON form."""
    if isinstance(ty, wc.Bool):
        return _Bool()
    if type(ty) in _INTS:
        return _Int(*_INTS[type(ty)])
    if isinstance(ty, wc.F32):
        return _Float("f32")
    if isinstance(ty, wc.F64):
        return _Float("f64")
    if isinstance(ty, wc.Char):
        return _Char()
    if isinstance(ty, wc.String):
        return _String()
    if isinstance(ty, wc.ListType):
        element = codec_for(ty.element)
        return _Bytes(element) if isinstance(element, _Int) and element.wit == "u8" else _List(element)
    if isinstance(ty, wc.RecordType):
        return _Record([(name, codec_for(field)) for name, field in ty.fields])
    if isinstance(ty, wc.TupleType):
        return _Tuple([codec_for(element) for element in ty.elements])
    if isinstance(ty, wc.EnumType):
        return _Enum(ty.names)
    if isinstance(ty, wc.FlagsType):
        return _Flags(ty.names)
    if isinstance(ty, wc.OptionType):
        return _Option(codec_for(ty.payload))
    if isinstance(ty, wc.VariantType):
        return _Variant([(name, None if case is None else codec_for(case)) for name, case in ty.cases])
    if isinstance(ty, wc.ResultType):
        ok, err = ty.ok, ty.err
        return _Variant(
            [("ok", None if ok is None else codec_for(ok)), ("err", None if err is None else codec_for(err))],
            is_result=True,
        )
    raise Unsupported(f"WIT type {type(ty).__name__} has no JSON form")


def is_result(codec: Codec) -> bool:
    """Whether a codec is a WIT `result`, whose `err` case is reported as a tool error."""
    return isinstance(codec, _Variant) and codec.is_result


def result_ok(codec: Codec) -> Codec | None:
    """The codec of a `result`'s ok payload (None for `result<_, E>`)."""
    assert isinstance(codec, _Variant)
    return codec.by_name["ok"]


def split_result(codec: Codec, value: Any) -> tuple[bool, Codec | None, Any]:
    """`(is_ok, payload codec, payload)` of a lifted `result` value, before JSON conversion."""
    assert isinstance(codec, _Variant)
    name, payload = codec.case_of(value)
    return name == "ok", codec.by_name[name], payload


def is_object(codec: Codec | None) -> bool:
    """Whether values of the type are JSON objects (records), which MCP sends unwrapped."""
    return isinstance(codec, _Record)


def is_optional(codec: Codec) -> bool:
    """Whether a field or argument of this type may be left out: an `option`, which is then none."""
    return isinstance(codec, _Option)


def property_schema(codec: Codec) -> Schema:
    """The schema of a record field or an argument: an `option` says that leaving it out means none."""
    return {**codec.schema, "default": None} if is_optional(codec) else codec.schema
