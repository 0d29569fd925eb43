"""Hypothesis strategies for protobuf messages, and raw gRPC calls that send any bytes.

Theory of operation: :func:`messages` builds a strategy for any message type from its
descriptor, field by field: strings with unicode, control characters and oversize values,
integers at and past their limits, NaN and infinite doubles, unknown enum numbers, nested
messages down to a depth, maps, repeated fields and oneofs (at most one member set).
``google.protobuf.Struct`` / ``Value`` fields get JSON-like values. ``overrides`` maps a
field's full name (``chaperon.v1.HttpStep.url``) to its own strategy, so the fields that
matter to validation (durations, methods, paths, URLs) are often *almost* valid, which
reaches deeper into the code than pure noise. :func:`mutated` starts from a valid message
and changes, clears or extends one to three of its fields.

:func:`call_raw` sends already-serialized bytes to a method (identity serializers), so the
same helper sends well-formed messages, messages of the wrong type and random bytes.
:func:`loopback_only` tells whether every URL and host:port string in a message points at
loopback, so nothing a fuzzer builds can aim the cluster elsewhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

FD = _descriptor.FieldDescriptor

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Nothing listens here in the tests (the discard port), so a stray run fails at connect.
DEAD_PORT = 9
DEAD_BASE_URL = f"http://127.0.0.1:{DEAD_PORT}"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX, _UINT64_MAX = 2**32 - 1, 2**64 - 1

_SPECIAL_STRINGS = [
    "",
    " ",
    "\x00",
    "\r\n",
    "a\r\nInjected: 1",
    "\t",
    "é",
    "\u202e",
    "\U0001d11e",
    "\ufeff",
    "%00",
    "../../etc/passwd",
    "x" * 201,
    "y" * 5000,
]


def _edge_ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted(v for v in {lo, lo + 1, -1, 0, 1, 2, hi - 1, hi} if lo <= v <= hi)
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def strings(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any valid UTF-8 text (no surrogates), short, or one of a few nasty ones."""
    return st.one_of(st.text(max_size=max_size), st.sampled_from(_SPECIAL_STRINGS))


DOUBLES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_STRING: strings(),
    FD.TYPE_BYTES: st.binary(max_size=40),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_DOUBLE: DOUBLES,
    FD.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    FD.TYPE_INT32: _edge_ints(_INT32_MIN, _INT32_MAX),
    FD.TYPE_SINT32: _edge_ints(_INT32_MIN, _INT32_MAX),
    FD.TYPE_SFIXED32: _edge_ints(_INT32_MIN, _INT32_MAX),
    FD.TYPE_INT64: _edge_ints(_INT64_MIN, _INT64_MAX),
    FD.TYPE_SINT64: _edge_ints(_INT64_MIN, _INT64_MAX),
    FD.TYPE_SFIXED64: _edge_ints(_INT64_MIN, _INT64_MAX),
    FD.TYPE_UINT32: _edge_ints(0, _UINT32_MAX),
    FD.TYPE_FIXED32: _edge_ints(0, _UINT32_MAX),
    FD.TYPE_UINT64: _edge_ints(0, _UINT64_MAX),
    FD.TYPE_FIXED64: _edge_ints(0, _UINT64_MAX),
}


def json_values(*, finite: bool = False, depth: int = 2) -> st.SearchStrategy[Any]:
    """JSON-like values for ``google.protobuf.Value`` (numbers NaN/inf unless ``finite``)."""
    numbers = st.floats(allow_nan=not finite, allow_infinity=not finite)
    leaves = st.one_of(st.none(), st.booleans(), numbers, strings())
    if depth <= 0:
        return leaves
    inner = json_values(finite=finite, depth=depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3),
        st.dictionaries(strings(12), inner, max_size=3),
    )


def json_objects(*, finite: bool = False, depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(strings(12), json_values(finite=finite, depth=depth), max_size=4)


@dataclass(frozen=True)
class Schema:
    """How to fill fields: per-field overrides, depth, and the Struct value strategy."""

    overrides: dict[str, st.SearchStrategy[Any]]
    struct_values: st.SearchStrategy[dict[str, Any]]
    value_values: st.SearchStrategy[Any]
    max_repeated: int = 3


def default_schema() -> Schema:
    return Schema({}, json_objects(), json_values())


def _field_value(fd: FD, schema: Schema, depth: int) -> st.SearchStrategy[Any]:
    """A strategy for one (non-repeated) value of ``fd``."""
    if fd.full_name in schema.overrides:
        return schema.overrides[fd.full_name]
    if fd.type == FD.TYPE_MESSAGE:
        return messages(fd.message_type, schema, depth - 1)
    if fd.type == FD.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(known), _edge_ints(_INT32_MIN, _INT32_MAX))
    return _SCALARS[fd.type]


def _assign(msg: Message, fd: FD, value: Any) -> None:
    if fd.type == FD.TYPE_MESSAGE:
        getattr(msg, fd.name).CopyFrom(value)
    else:
        setattr(msg, fd.name, value)


def _set_field(
    msg: Message, fd: FD, draw: Callable[[st.SearchStrategy[Any]], Any], schema: Schema, depth: int
) -> None:
    """Give ``fd`` of ``msg`` a drawn value (a list for repeated fields, entries for maps)."""
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        val_fd = fd.message_type.fields_by_name["value"]
        entries = draw(
            st.dictionaries(
                _field_value(key_fd, schema, depth),
                _field_value(val_fd, schema, depth),
                max_size=schema.max_repeated,
            )
        )
        container = getattr(msg, fd.name)
        for k, v in entries.items():
            if val_fd.type == FD.TYPE_MESSAGE:
                container[k].CopyFrom(v)
            else:
                container[k] = v
        return
    if fd.is_repeated:
        values = draw(st.lists(_field_value(fd, schema, depth), max_size=schema.max_repeated))
        container = getattr(msg, fd.name)
        for v in values:
            if fd.type == FD.TYPE_MESSAGE:
                container.add().CopyFrom(v)
            else:
                container.append(v)
        return
    _assign(msg, fd, draw(_field_value(fd, schema, depth)))


def messages(
    descriptor: _descriptor.Descriptor, schema: Schema | None = None, depth: int = 5
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type with any subset of fields set to drawn values."""
    schema = schema or default_schema()
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":

        def struct(value: dict[str, Any]) -> Message:
            out = cls()
            out.update(value)  # type: ignore[attr-defined]
            return out

        return schema.struct_values.map(struct)
    if descriptor.full_name == "google.protobuf.Value":

        def value_msg(value: Any) -> Message:
            holder = GetMessageClass(descriptor.file.message_types_by_name["Struct"])()
            holder.update({"v": value})  # type: ignore[attr-defined]
            out = cls()
            out.CopyFrom(holder.fields["v"])  # type: ignore[attr-defined]
            return out

        return schema.value_values.map(value_msg)

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
        msg = cls()
        if depth < 0:
            return msg
        for fd in descriptor.fields:
            if fd.containing_oneof is not None:
                continue
            if fd.type == FD.TYPE_MESSAGE and depth == 0:
                continue
            if draw(st.booleans()):
                _set_field(msg, fd, draw, schema, depth)
        for oneof in descriptor.oneofs:
            members = [fd for fd in oneof.fields if not (fd.type == FD.TYPE_MESSAGE and depth == 0)]
            choice = draw(st.sampled_from([None, *members])) if members else None
            if choice is not None:
                _set_field(msg, choice, draw, schema, depth)
        return msg

    return build()


def _fields_of(msg: Message) -> Iterator[tuple[Message, FD]]:
    """Every (message, field) pair reachable through the set message fields of ``msg``."""
    desc = msg.DESCRIPTOR
    if desc.full_name in ("google.protobuf.Struct", "google.protobuf.Value"):
        return  # replaced whole, through the schema's JSON strategies
    for fd in desc.fields:
        yield msg, fd
    for fd, value in msg.ListFields():
        if fd.type != FD.TYPE_MESSAGE or _is_map(fd):
            continue
        if fd.is_repeated:
            for item in value:
                yield from _fields_of(item)
        else:
            yield from _fields_of(value)


def mutated(
    base: Message, schema: Schema | None = None, max_changes: int = 3
) -> st.SearchStrategy[Message]:
    """Copies of ``base`` with 1..``max_changes`` fields cleared, replaced or extended."""
    schema = schema or default_schema()

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
        msg = type(base)()
        msg.CopyFrom(base)
        for _ in range(draw(st.integers(1, max_changes))):
            targets = list(_fields_of(msg))
            parent, fd = draw(st.sampled_from(targets))
            action = draw(st.sampled_from(["clear", "set", "set", "set"]))
            if action == "clear":
                parent.ClearField(fd.name)
            else:
                if fd.is_repeated and draw(st.booleans()):
                    parent.ClearField(fd.name)  # replace rather than extend
                elif not fd.is_repeated:
                    parent.ClearField(fd.name)
                _set_field(parent, fd, draw, schema, depth=2)
        return msg

    return build()


# -- keeping fuzzed input on loopback ---------------------------------------------------------


def _is_map(fd: FD) -> bool:
    return bool(fd.is_repeated and fd.message_type and fd.message_type.GetOptions().map_entry)


def _strings_in(msg: Message) -> Iterator[str]:
    for fd, value in msg.ListFields():
        items = value if fd.is_repeated else [value]
        if _is_map(fd):
            val_fd = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                if isinstance(k, str):
                    yield k
                if val_fd.type == FD.TYPE_MESSAGE:
                    yield from _strings_in(v)
                elif isinstance(v, str):
                    yield v
            continue
        for item in items:
            if isinstance(item, Message):
                yield from _strings_in(item)
            elif isinstance(item, str):
                yield item


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


def _loopback_url(text: str) -> bool:
    try:
        host = urlsplit(text.strip()).hostname
    except ValueError:
        return True  # not a URL anyone can dial
    return host is None or host in LOOPBACK_HOSTS


def loopback_only(msg: Message) -> bool:
    """False if any string in ``msg`` looks like a URL or worker address off loopback."""
    for text in _strings_in(msg):
        # Targets are absolute http(s) URLs (base_url, HttpStep.url): they all have "://".
        if "://" in text and not all(map(_loopback_url, [text, *_URL.findall(text)])):
            return False
    if msg.DESCRIPTOR.full_name == "chaperon.v1.RegisterWorkerRequest":
        address: str = msg.address  # type: ignore[attr-defined]
        if ":" in address and not address.startswith(("127.0.0.1:", "[::1]:", "localhost:")):
            return False
    return True


# -- raw calls --------------------------------------------------------------------------------


def call_raw(
    channel: grpc.Channel,
    method: str,
    payload: bytes,
    *,
    timeout_s: float,
    server_streaming: bool = False,
) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the serialized request of ``method``; return (code, details).

    Identity serializers: what is sent is exactly ``payload``. A stream is read to its end.
    """
    try:
        if server_streaming:
            stream = channel.unary_stream(method)
            call = stream(payload, timeout=timeout_s)
            for _ in call:
                pass
        else:
            channel.unary_unary(method)(payload, timeout=timeout_s)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""
