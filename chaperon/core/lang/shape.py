"""The compiler's first pass: what a load test weighs, before any rule looks inside it.

The rules (``check``, ``check_steps``) cost time in proportion to what they check: every
entry, step, header and JSON value. So before them, ``weigh`` looks at what the load test
costs, with work bounded by the limits themselves (it stops counting at the first limit
passed), and refuses it at once when it is too big:

1. its serialized size (``ByteSize``, computed in C) against ``MAX_LOAD_TEST_BYTES``, and
   the counts a repeated field knows without a walk (entries, thresholds, config keys);
2. one walk over every message, map entry, list item and JSON value (an explicit stack, no
   recursion), counting them (``MAX_ELEMENTS``) and the steps (``MAX_STEPS``), and on the
   way refusing what would break those who read the load test later: a Struct (config, a
   json body) that nests deeper than ``MAX_STRUCT_DEPTH``, and control characters in any
   text that is a name, a key, a label or a reason (everything but the payload fields
   below, whose bytes are data);
3. the scenarios run by name (``graph.ScenarioGraph``): a chain of names that comes back to
   its start, and more than ``MAX_EXPANDED_STEPS`` steps once every name is inlined.

Too big is ``RESOURCE_EXHAUSTED`` (raised at the first count passed); a bad field is
``INVALID_ARGUMENT`` naming it (all of them, once the walk is over). Only a load test that
passes goes on to the rules, with the ``ScenarioGraph`` they use for names.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from chaperon.core.errors import ResourceExhausted
from chaperon.core.lang.graph import PARTS, ScenarioGraph
from chaperon.core.lang.limits import (
    MAX_CONFIG_KEYS,
    MAX_ELEMENTS,
    MAX_ENTRIES,
    MAX_EXPANDED_STEPS,
    MAX_LOAD_TEST_BYTES,
    MAX_SCENARIO_DEPTH,
    MAX_STEPS,
    MAX_STRUCT_DEPTH,
    MAX_THRESHOLDS,
)
from chaperon.core.lang.problems import Collector
from chaperon.core.loadtest import entry_scenarios
from chaperon.core.text import control_char_problem, printable
from chaperon.v1 import loadtest_pb2

# Text fields that are data, sent or matched as they are: any character may be in them.
# Header values have their own rule (a tab is fine, other controls are not: check_steps).
_PAYLOAD_FIELDS = frozenset(
    {
        "chaperon.v1.HttpStep.body",
        "chaperon.v1.HttpStep.headers",  # map values; the names are checked as tokens
        "chaperon.v1.HttpStep.query",  # map values (percent-encoded when sent)
        "chaperon.v1.FormBody.fields",  # map values (percent-encoded when sent)
        "chaperon.v1.BasicAuth.username",
        "chaperon.v1.BasicAuth.password",
        "chaperon.v1.Extract.json_path",
        "chaperon.v1.Extract.regex",
        "chaperon.v1.WsConnectStep.headers",  # map values
        "chaperon.v1.WsSendStep.text",
        "chaperon.v1.WsAwaitRecvStep.expected",
        "chaperon.v1.AssignStep.values",  # map values; the names are variable names
        "chaperon.v1.UpdateAssignStep.set",
    }
)
_STRUCT = "google.protobuf.Struct"
_LIST = "google.protobuf.ListValue"
_VALUE = "google.protobuf.Value"
_STEP = "chaperon.v1.Step"


def _too_big(what: str) -> ResourceExhausted:
    return ResourceExhausted(f"load test too large: {what}")


def weigh(lt: loadtest_pb2.LoadTest) -> ScenarioGraph:
    """Refuse ``lt`` if it weighs too much or holds what nobody downstream can read (module
    docstring); else its ScenarioGraph, for the rules."""
    size = lt.ByteSize()
    if size > MAX_LOAD_TEST_BYTES:
        raise _too_big(f"{size} bytes, more than {MAX_LOAD_TEST_BYTES} ({_mib(size)} MiB)")
    if len(lt.scenarios) > MAX_ENTRIES:
        raise _too_big(f"scenarios: {len(lt.scenarios)} entries, more than {MAX_ENTRIES}")
    if len(lt.thresholds) > MAX_THRESHOLDS:
        raise _too_big(f"thresholds: more than {MAX_THRESHOLDS}")
    configs = [("config", lt.config)] + [
        (f"scenarios[{i}].config", e.config) for i, e in enumerate(lt.scenarios)
    ]
    for path, config in configs:
        if len(config.fields) > MAX_CONFIG_KEYS:
            raise _too_big(f"{path}: more than {MAX_CONFIG_KEYS} keys")
    c = Collector()
    _walk(c, lt)
    graph = ScenarioGraph(lt)
    if graph.cycle is not None:
        where, names = graph.cycle
        c.bad(
            where,
            f"scenario {names[0]!r} runs itself ({' -> '.join(repr(n) for n in names)}):"
            f" run_scenario nests at most {MAX_SCENARIO_DEPTH} deep",
        )
    elif (deep := graph.too_deep(MAX_SCENARIO_DEPTH)) is not None:
        # Refused here, before the rules walk the names (recursively, one frame a level).
        c.bad(deep[1], f"run_scenario nests at most {MAX_SCENARIO_DEPTH} deep")
    else:
        expanded = 0
        for i, entry in enumerate(lt.scenarios):
            expanded += graph.expanded_steps(
                getattr(s, part) for s in entry_scenarios(entry) for part in PARTS
            )
            if expanded > MAX_EXPANDED_STEPS:
                raise _too_big(
                    f"scenarios[{i}]: the entries run more than {MAX_EXPANDED_STEPS} steps"
                    " once the scenarios they run by name are inlined"
                )
    c.raise_if_any("load test")
    return graph


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"


# Per field: (is a message, is repeated, is a map, a payload field).
_INFO: dict[Any, tuple[bool, bool, bool, bool]] = {}


def _info(fd: FieldDescriptor) -> tuple[bool, bool, bool, bool]:
    info = _INFO.get(fd)
    if info is None:
        message_type = fd.message_type
        message = message_type is not None
        is_map = message_type is not None and bool(message_type.GetOptions().map_entry)
        info = (message, fd.is_repeated, is_map, fd.full_name in _PAYLOAD_FIELDS)
        _INFO[fd] = info
    return info


def _walk(c: Collector, lt: loadtest_pb2.LoadTest) -> None:
    """Count elements and steps, check text and Struct depth, message by message."""
    elements = 0
    steps = 0
    # (message, field path, Struct depth so far)
    stack: list[tuple[Any, str, int]] = [(lt, "", 0)]
    while stack:
        msg, path, depth = stack.pop()
        elements += 1
        if elements > MAX_ELEMENTS:
            raise _too_many_elements(path)
        kind = msg.DESCRIPTOR.full_name
        if kind in (_STRUCT, _LIST, _VALUE):
            _struct(c, stack, msg, kind, path, depth)
            continue
        if kind == _STEP:
            steps += 1
            if steps > MAX_STEPS:
                raise _too_big(f"more than {MAX_STEPS} steps (at {path})")
        dot = f"{path}." if path else ""
        children = []
        for fd, value in msg.ListFields():
            message, repeated, is_map, payload = _info(fd)
            where = dot + fd.name
            if is_map:
                elements += len(value)
                if elements > MAX_ELEMENTS:
                    raise _too_many_elements(where)
                for key in value:
                    at = f"{where}[{printable(key)}]"  # a path goes to terminals too
                    _text(c, at, key)
                    item = value[key]
                    if isinstance(item, str):
                        if not payload:
                            _text(c, at, item)
                    elif not isinstance(item, (int, float, bytes)):
                        children.append((item, at, depth))
            elif repeated:
                if message:
                    children += [(item, f"{where}[{k}]", depth) for k, item in enumerate(value)]
                else:
                    elements += len(value)
                    if elements > MAX_ELEMENTS:
                        raise _too_many_elements(where)
                    for k, item in enumerate(value):
                        if isinstance(item, str):
                            _text(c, f"{where}[{k}]", item)
            elif message:
                children.append((value, where, depth))
            elif isinstance(value, str) and not payload:
                _text(c, where, value)
        stack += reversed(children)  # in field order: problems are listed as written


def _too_many_elements(path: str) -> ResourceExhausted:
    return _too_big(
        f"more than {MAX_ELEMENTS} messages, map entries and JSON values (at {path or 'the top'})"
    )


def _struct(
    c: Collector, stack: list[tuple[Any, str, int]], msg: Any, kind: str, path: str, depth: int
) -> None:
    """A Struct, ListValue or Value: its children onto ``stack``, one level deeper for an
    object or a list; keys and strings are data (config values, JSON)."""
    if kind == _VALUE:
        which = msg.WhichOneof("kind")
        if which == "struct_value":
            stack.append((msg.struct_value, path, depth))
        elif which == "list_value":
            stack.append((msg.list_value, path, depth))
        return
    depth += 1
    if depth > MAX_STRUCT_DEPTH:
        c.bad(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels of objects and lists")
        return
    if kind == _STRUCT:
        for key, value in msg.fields.items():
            stack.append((value, f"{path}.{printable(key)}", depth))
    else:
        for k, value in enumerate(msg.values):
            stack.append((value, f"{path}[{k}]", depth))


def _text(c: Collector, path: str, text: str) -> None:
    problem = control_char_problem(text)
    if problem:
        c.bad(path, problem)
