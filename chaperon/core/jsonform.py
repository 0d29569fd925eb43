"""What is wrong with a load test's JSON form, said as what to fix.

A load-test file (JSON or YAML) is read into Python values and turned into the ``LoadTest``
message by protobuf's JSON parser (``json_format.ParseDict``). That parser says what went
wrong in its own terms: camelCase names, message type names, the list of every field, and
for a number where a string goes no more than ``expected string or bytes-like object``. So
when it refuses a value, ``form_problems`` walks the same value against the same message
types and says, for each problem, where it is and what to write instead:

- the field path in snake_case, as the master's checks write it (``scenarios[0].duration``),
  and the keys as they are written in the file (``where``), so that the file's reader can
  find the line;
- an unknown field with the known one it most likely meant (``spelling.did_you_mean``), or,
  when the field belongs one level down, where to put it (``run`` in a scenario entry goes
  under ``scenario``), else the fields there are;
- a value of the wrong type with what is expected and an example, and what was given
  (``expected a duration string such as '5s' or '1m30s', got the number 5``);
- a oneof given twice (``give only one of scenario, sequence``), JSON nested deeper than
  the parser takes, text that is not text (a lone surrogate), and YAML's own types (a date,
  a set) where only JSON goes.

The rules are the parser's, written out (``_ConvertScalarFieldValue`` and its neighbours in
protobuf's ``json_format``): what the parser accepts, this accepts (but an empty string or
list where a message goes, which the parser reads as an object without keys), so a value it
refuses shows at least one problem here (the unit tests hold the two together on random
input).
Nothing here is called on the way of a good file: only once the parser has refused one.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from chaperon.core.spelling import did_you_mean
from chaperon.core.text import printable

# The parser's own bound: messages (and JSON values inside a Struct) nested at most this deep.
MAX_PARSE_DEPTH = 100

# The string fields that hold a duration ("5s"): a number there is the commonest mistake.
DURATION_FIELDS = frozenset(
    {
        "chaperon.v1.LoadTest.timeout",
        "chaperon.v1.ScenarioEntry.duration",
        "chaperon.v1.ScenarioEntry.scenario_timeout",
        "chaperon.v1.ScenarioEntry.delay",
        "chaperon.v1.ScenarioEntry.random_delay",
        "chaperon.v1.ScenarioEntry.graceful_stop",
        "chaperon.v1.RateStage.duration",
        "chaperon.v1.WsRecvStep.timeout",
        "chaperon.v1.WsAwaitRecvStep.timeout",
        "chaperon.v1.CcSpreadStep.interval",
        "chaperon.v1.AwaitStep.timeout",
        "chaperon.v1.AwaitAllStep.timeout",
        "chaperon.v1.AwaitSignalStep.timeout",
        "chaperon.v1.RetryOnErrorStep.backoff",
        "chaperon.v1.DelayStep.duration",
        "chaperon.v1.RandomDelayStep.min",
        "chaperon.v1.RandomDelayStep.max",
        "chaperon.v1.LoopStep.duration",
    }
)
DURATION_EXPECTED = "a duration string such as '5s' or '1m30s'"

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
_WELL_KNOWN = (_STRUCT, _VALUE, _LIST_VALUE)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOAT_WORDS = ("NaN", "Infinity", "-Infinity")

Where = tuple[str | int, ...]
# A message's descriptor (protobuf's pure-Python and upb classes differ; both are read alike).
Descriptor = Any


@dataclass(frozen=True)
class FormProblem:
    """One problem: ``path`` in snake_case ("" for the load test itself), ``where`` the keys
    and indexes as written in the file (to find its line), ``message`` what to fix."""

    path: str
    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def form_problems(data: Any, descriptor: Descriptor, limit: int = 20) -> list[FormProblem]:
    """The problems of ``data`` as the JSON form of a ``descriptor`` message, in the order
    they are written; at most ``limit``."""
    out: list[FormProblem] = []
    for problem in _walk(data, descriptor):
        out.append(problem)
        if len(out) >= limit:
            break
    return out


# A frame of the walk: (value, what it should be, path, where, parser depth). What it should
# be is a message Descriptor, or a FieldDescriptor for one scalar value of that field.
_Frame = tuple[Any, Any, str, Where, int]
# What the walk has to do next, in the order of the file: a frame to walk, or a problem to say.
_Todo = _Frame | FormProblem


def _walk(data: Any, descriptor: Descriptor) -> Iterator[FormProblem]:
    """Every problem, depth first in the order of the file (an explicit stack: a Struct may
    nest as deep as the parser allows)."""
    stack: list[_Todo] = [(data, descriptor, "", (), 1)]
    while stack:
        todo = stack.pop()
        if isinstance(todo, FormProblem):
            yield todo
            continue
        value, kind, path, where, depth = todo
        children: list[_Todo] = []
        if isinstance(kind, FieldDescriptor):
            problem = _scalar_problem(value, kind)
            if problem:
                yield FormProblem(path, where, problem)
            continue
        if depth > MAX_PARSE_DEPTH:
            yield FormProblem(
                path,
                where,
                f"nests more than {MAX_PARSE_DEPTH} levels of messages and JSON values deep",
            )
            continue
        name = kind.full_name
        if name == _VALUE:
            _json_value(value, path, where, depth, children)
        elif name == _STRUCT:
            if not isinstance(value, dict):
                yield FormProblem(path, where, f"expected an object, got {_what(value)}")
            else:
                _struct(value, kind, path, where, depth, children)
        elif name == _LIST_VALUE:
            if not isinstance(value, (list, tuple)):
                yield FormProblem(path, where, f"expected a list, got {_what(value)}")
            else:
                value_type = kind.fields_by_name["values"].message_type
                for i, item in enumerate(value):
                    children.append((item, value_type, f"{path}[{i}]", (*where, i), depth + 1))
        elif not isinstance(value, dict):
            yield FormProblem(path, where, f"expected an object, got {_what(value)}")
        else:
            _message(value, kind, path, where, depth, children)
        stack += reversed(children)


def _json_value(value: Any, path: str, where: Where, depth: int, children: list[_Todo]) -> None:
    """A google.protobuf.Value: any JSON value, and only JSON values."""
    fields = _value_descriptor().fields_by_name
    if isinstance(value, dict):
        children.append((value, fields["struct_value"].message_type, path, where, depth + 1))
    elif isinstance(value, (list, tuple)):
        children.append((value, fields["list_value"].message_type, path, where, depth + 1))
    elif isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            children.append(FormProblem(path, where, problem))
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            children.append(FormProblem(path, where, f"the number {_short(value)} is too large"))
    elif value is not None and not isinstance(value, (bool, float)):
        children.append(FormProblem(path, where, f"expected a JSON value, got {_what(value)}"))


_VALUE_DESCRIPTOR: list[Any] = []


def _value_descriptor() -> Descriptor:
    if not _VALUE_DESCRIPTOR:
        from google.protobuf import struct_pb2

        _VALUE_DESCRIPTOR.append(struct_pb2.Value.DESCRIPTOR)
    return _VALUE_DESCRIPTOR[0]


def _struct(
    value: dict[Any, Any],
    kind: Descriptor,
    path: str,
    where: Where,
    depth: int,
    children: list[_Todo],
) -> None:
    value_type = kind.fields_by_name["fields"].message_type.fields_by_name["value"].message_type
    for key, item in value.items():
        if not isinstance(key, str):
            children.append(FormProblem(path, where, f"expected text as a key, got {_what(key)}"))
            continue
        at = f"{path}.{printable(key)}" if path else printable(key)
        problem = _text_problem(key)
        if problem:
            children.append(FormProblem(at, (*where, key), f"the key {problem}"))
            continue
        children.append((item, value_type, at, (*where, key), depth + 1))


def _message(
    value: dict[Any, Any],
    kind: Descriptor,
    path: str,
    where: Where,
    depth: int,
    children: list[_Todo],
) -> None:
    """A message of ours: its fields by either spelling, each value against its type."""
    by_name = {**{f.json_name: f for f in kind.fields}, **kind.fields_by_name}
    oneofs: dict[str, str] = {}  # oneof name -> the key that set it
    dot = f"{path}." if path else ""
    for key, item in value.items():
        if not isinstance(key, str):
            children.append(FormProblem(path, where, f"expected a field name, got {_what(key)}"))
            continue
        field = by_name.get(key)
        if field is None:
            children.append(
                FormProblem(
                    path, (*where, key), f"unknown field '{printable(key)}'{_hint(key, kind)}"
                )
            )
            continue
        at, here = dot + field.name, (*where, key)
        if item is None:
            continue  # the parser leaves the field unset
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in oneofs:
                choices = ", ".join(f.name for f in oneof.fields)
                given = printable(oneofs[oneof.name])
                children.append(
                    FormProblem(
                        path,
                        here,
                        f"give only one of {choices} ('{given}' is given already)",
                    )
                )
                continue
            oneofs[oneof.name] = key
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _map(item, field, at, here, depth, children)
        elif field.is_repeated:
            _list(item, field, at, here, depth, children)
        elif field.message_type is not None:
            children.append((item, field.message_type, at, here, depth + 1))
        else:
            children.append((item, field, at, here, depth))


def _list(
    value: Any, field: Any, path: str, where: Where, depth: int, children: list[_Todo]
) -> None:
    if not isinstance(value, (list, tuple)):
        item = _expected(field, plural=True)
        children.append(
            FormProblem(
                path,
                where,
                f"expected a list (of {item}), got {_what(value)}"
                + (" (in YAML, start each item with '- ')" if isinstance(value, dict) else ""),
            )
        )
        return
    for i, item in enumerate(value):
        at, here = f"{path}[{i}]", (*where, i)
        if item is None and (field.message_type is None or field.message_type.full_name != _VALUE):
            children.append(FormProblem(at, here, f"expected {_expected(field)}, got null"))
        elif field.message_type is not None:
            children.append((item, field.message_type, at, here, depth + 1))
        else:
            children.append((item, field, at, here, depth))


def _map(
    value: Any, field: Any, path: str, where: Where, depth: int, children: list[_Todo]
) -> None:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    if not isinstance(value, dict):
        values = _expected(value_field, plural=True)
        children.append(
            FormProblem(path, where, f"expected an object of names to {values}, got {_what(value)}")
        )
        return
    for key, item in value.items():
        if key_field.cpp_type == FieldDescriptor.CPPTYPE_STRING and not isinstance(key, str):
            children.append(FormProblem(path, where, f"expected text as a name, got {_what(key)}"))
            continue
        at, here = f"{path}[{printable(str(key))}]", (*where, key)
        problem = _text_problem(key) if isinstance(key, str) else None
        if problem:
            children.append(FormProblem(at, here, f"the name {problem}"))
        elif value_field.message_type is not None:
            if item is None and value_field.message_type.full_name != _VALUE:
                children.append(
                    FormProblem(at, here, f"expected {_expected(value_field)}, got null")
                )
            else:
                children.append((item, value_field.message_type, at, here, depth + 1))
        else:
            children.append((item, value_field, at, here, depth))


def _hint(key: str, kind: Descriptor) -> str:
    """What an unknown field most likely meant: a field here spelt alike, a field of a
    message one level down (then: put it there), or the fields there are."""
    spellings = [(f.name, f.name) for f in kind.fields]
    spellings += [(f.json_name, f.name) for f in kind.fields]
    hint = did_you_mean(key, spellings)
    if hint:
        return hint
    for field in kind.fields:
        sub = field.message_type
        if sub is None or sub.full_name in _WELL_KNOWN or sub.GetOptions().map_entry:
            continue
        if key in sub.fields_by_name or any(f.json_name == key for f in sub.fields):
            return f" (it is a field of {field.name}: put it under {field.name!r})"
    return f" (the fields here are: {', '.join(f.name for f in kind.fields)})"


def _expected(field: Any, plural: bool = False) -> str:
    """What a value of ``field`` is, with an example."""
    if field.message_type is not None:
        name = field.message_type.full_name
        if name == _VALUE:
            return "JSON values" if plural else "a JSON value"
        if name == _LIST_VALUE:
            return "lists" if plural else "a list"
        return "objects" if plural else "an object"
    cpp = field.cpp_type
    if field.full_name in DURATION_FIELDS:
        return "duration strings such as '5s'" if plural else DURATION_EXPECTED
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "base64 text" if plural else "base64 text such as 'aGVsbG8='"
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return "strings" if plural else "a string"
    if cpp in _INT_RANGES:
        return "whole numbers" if plural else "a whole number such as 10"
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return "numbers" if plural else "a number such as 2.5"
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return "true or false"
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        names = ", ".join(v.name for v in field.enum_type.values)
        return f"one of {names}"
    return "a value"  # pragma: no cover - every scalar type is above


def _scalar_problem(value: Any, field: Any) -> str | None:
    """Why the parser refuses ``value`` for ``field`` (a scalar), said as what to write."""
    cpp = field.cpp_type
    expected = f"expected {_expected(field)}, got {_what(value)}"
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return _bytes_problem(value, expected)
        if not isinstance(value, str):
            quote = isinstance(value, (int, float)) and field.full_name not in DURATION_FIELDS
            return expected + (" (put it in quotes)" if quote else "")
        return _text_problem(value)
    if cpp in _INT_RANGES:
        return _int_problem(value, _INT_RANGES[cpp], expected)
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return _float_problem(value, field, expected)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return None if isinstance(value, bool) else expected
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        if isinstance(value, str) and value in field.enum_type.values_by_name:
            return None
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return expected
        closed = field.enum_type.is_closed
        return expected if closed and number not in field.enum_type.values_by_number else None
    return None  # pragma: no cover - messages are walked, not checked here


def _bytes_problem(value: Any, expected: str) -> str | None:
    if not isinstance(value, (str, bytes)):
        return expected
    encoded = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    try:
        base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))
    except (binascii.Error, ValueError):
        return expected
    return None


def _int_problem(value: Any, bounds: tuple[int, int], expected: str) -> str | None:
    if isinstance(value, bool):
        return expected
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, str) and " " not in value:
        try:
            number = int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                f = math.nan
            number = int(f) if f.is_integer() else None
    if number is None:
        return expected
    low, high = bounds
    if not low <= number <= high:
        return f"expected a whole number from {low} to {high}, got {_what(value)}"
    return None


def _float_problem(value: Any, field: Any, expected: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{expected} (write {'NaN' if math.isnan(value) else 'Infinity'!r} in quotes)"
    if isinstance(value, str):
        if value in _FLOAT_WORDS:
            return None
        if value == "nan":
            return f"{expected} (write 'NaN')"
        try:
            float(value)
        except ValueError:
            return expected
        return None
    if not isinstance(value, (int, float)):
        return expected
    try:
        number = float(value)
    except OverflowError:
        return f"the number {_short(value)} is too large"
    if field.cpp_type == FieldDescriptor.CPPTYPE_FLOAT and abs(number) > 3.4028234663852886e38:
        return f"the number {_short(value)} is too large"
    return None


def _text_problem(text: str) -> str | None:
    """Text the parser refuses: a lone surrogate (a JSON ``\\ud800`` escape alone)."""
    match = _LONE_SURROGATE.search(text)
    if match is None:
        return None
    return f"holds a lone surrogate (\\u{ord(match.group()):04x}), which is not text"


def _what(value: Any) -> str:
    """What a value is, for "got ...": the number 5, the string '5', true, a list."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {_short(value)}"
    if isinstance(value, str):
        return f"the string '{_short(value)}'"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    name = type(value).__name__
    return f"a YAML {name} ({_short(value)}: put it in quotes to make it a string)"


def _short(value: Any, limit: int = 40) -> str:
    """``value`` as text for a message: control characters escaped, at most ``limit`` long."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        # str() of a huge int is slow, and refused past 4300 digits.
        return f"of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = value if isinstance(value, str) else str(value)
    text = printable(_LONE_SURROGATE.sub("?", text))
    return text if len(text) <= limit else text[: limit - 3] + "..."
