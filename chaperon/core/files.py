"""Load-test files: JSON, YAML or a Python script, read with limits on what they may cost.

A load-test file is read before any master has seen it (``chaperon run``, ``submit``), so
this is where a file that costs more than any load test could is refused, in one line that
names the file and the limit (``LoadTestFileError``; the CLI prints it and exits 2):

- its size: at most ``MAX_FILE_BYTES``, and never more than that is read (a FIFO or
  ``/dev/zero`` given as the file is refused, not read for ever);
- its nesting: objects and lists at most ``MAX_FILE_DEPTH`` deep. Parsers recurse (the JSON
  one raises RecursionError, libyaml's composer overflows the C stack on deep input), and the
  deepest valid load test is well under this (``lang.limits.MAX_STRUCT_DEPTH`` for a Struct
  in steps nested to their limits);
- YAML aliases: an alias is a reference to an anchored node, and the loaded data shares it,
  but everything that walks the data (protobuf's JSON parser, then every check) walks each
  use in full: ten aliases of ten aliases of ... are a few lines and a billion values. So the
  *expanded* size (values, plus the characters of the scalars, as if every alias were
  written out) is at most ``MAX_EXPANDED_SIZE``, counted on the event stream before anything
  is built, and an alias inside its own anchor is refused.

The YAML check reads libyaml's events (``yaml.parse``, no recursion, stopping at the first
limit passed), then the file is loaded with the safe loader, which now meets nothing it could
choke on. JSON has no aliases: its depth is checked on the parsed value, with an explicit
stack. A Python file is the user's code: it runs as it is (``runpy``), without these limits.

A JSON or YAML file that is not a load test's form is refused with a line per problem: the
file, the line, the field path and what to write instead (``jsonform`` says what, and
``positions.Positions`` finds the line, only once there is a problem). ``read_load_test``
hands the positions on, so that what the master refuses in the file can be given its line too.
"""

from __future__ import annotations

import json
import os
import runpy
import stat
from dataclasses import dataclass
from typing import Any

from chaperon.core.loadtest import LoadTestFileError, load_test_from_dict, unwrap_request
from chaperon.core.positions import Positions
from chaperon.v1 import loadtest_pb2

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FILE_DEPTH = 100
MAX_EXPANDED_SIZE = 16 * 1024 * 1024  # values + scalar characters, every alias written out


@dataclass(frozen=True)
class LoadedFile:
    """A load test read from a file, and where its fields are written in it (None for a
    Python file): ``positions.line_of_field(path)`` is the line of a field the master
    refuses."""

    load_test: loadtest_pb2.LoadTest
    positions: Positions | None


def load_file(path: str) -> loadtest_pb2.LoadTest:
    """Read a load test from a .json, .yaml/.yml or .py file; LoadTestFileError on any problem.

    A Python file must leave a ``LoadTest`` message (or a dict of its JSON form, or an object
    with ``to_proto()``) in a module-level variable named ``load_test`` or ``LOAD_TEST``.
    """
    return read_load_test(path).load_test


def read_load_test(path: str) -> LoadedFile:
    """``load_file``, with the positions of the fields of a JSON or YAML file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise LoadTestFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise LoadTestFileError(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise LoadTestFileError(f"{path}: is a directory, not a load-test file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".py":
        return LoadedFile(_load_python(path), None)
    text = read_text(path)
    if ext in (".yaml", ".yml"):
        data, positions = load_yaml(text, path), Positions(text, "yaml")
    else:
        data, positions = load_json(text, path), Positions(text, "json")
    load_test = load_test_from_dict(data, path, positions.line)
    positions.prefix = unwrap_request(data)[1]
    return LoadedFile(load_test, positions)


def read_text(path: str) -> str:
    """The file's text (UTF-8), if it is at most MAX_FILE_BYTES (no more is ever read)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LoadTestFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise LoadTestFileError(
            f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the limit of a"
            " load-test file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadTestFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_json(text: str, source: str) -> Any:
    """The JSON value of ``text``, if it nests at most MAX_FILE_DEPTH deep."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadTestFileError(
            f"{source}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:  # deeper than the interpreter's stack: deeper than the limit
        raise _too_deep(source) from None
    if _depth(data) > MAX_FILE_DEPTH:
        raise _too_deep(source)
    return data


def _depth(value: Any) -> int:
    """How deep objects and lists nest in ``value`` (an explicit stack, stops past the limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_FILE_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(source: str) -> LoadTestFileError:
    return LoadTestFileError(
        f"{source}: objects and lists nest more than {MAX_FILE_DEPTH} deep, the limit of a"
        " load-test file"
    )


def load_yaml(text: str, source: str) -> Any:
    """The YAML value of ``text`` (one document, the safe loader), once its events show it
    within the limits on nesting and on its size with every alias expanded."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_yaml_events(yaml.parse(text, Loader=loader), source)
        return yaml.load(text, Loader=loader)  # noqa: S506 - the safe loader
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None)
        if problem is not None and "maximum nesting depth" in str(problem):
            # libyaml's own limit (newer builds), met while it scans ahead of the events our
            # check reads: the same refusal as ours.
            raise _too_deep(source) from None
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = f": {' '.join(str(problem).split())}" if problem else ""
        raise LoadTestFileError(f"{source}: not valid YAML{where}{what}") from None
    except LoadTestFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors meet malformed scalars
        # ("!!int ''", "!!timestamp 2001-13-01") with IndexError, ValueError, OverflowError.
        what = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise LoadTestFileError(f"{source}: not valid YAML ({what})") from None


def _check_yaml_events(events: Any, source: str) -> None:
    """Walk the event stream: nesting, and each node's expanded size (an alias weighs what
    its anchor does), refused at the first limit passed."""
    import yaml

    # One frame per open collection: [expanded size so far, height below it, anchor].
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, height)
    open_anchors: set[str] = set()
    total = 0

    def done(size: int, height: int, anchor: str | None) -> None:
        nonlocal total
        if anchor:
            anchors[anchor] = (size, height)
            open_anchors.discard(anchor)
        if len(stack) + height > MAX_FILE_DEPTH:
            raise _too_deep(source)
        if stack:
            stack[-1][0] += size
            stack[-1][1] = max(stack[-1][1], height + 1)
            size = stack[-1][0]
        else:
            total += size
            size = total
        if size > MAX_EXPANDED_SIZE:
            raise LoadTestFileError(
                f"{source}: more than {MAX_EXPANDED_SIZE} values and characters once its"
                " YAML aliases are expanded (an alias counts as what its anchor holds)"
            )

    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([1, 0, event.anchor])
            if event.anchor:
                open_anchors.add(event.anchor)
            if len(stack) > MAX_FILE_DEPTH:
                raise _too_deep(source)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, height, anchor = stack.pop()
            done(size, height, anchor)
        elif isinstance(event, yaml.ScalarEvent):
            done(1 + len(event.value), 0, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise LoadTestFileError(
                    f"{source}: the YAML alias *{event.anchor} is inside its own anchor"
                )
            size, height = anchors.get(event.anchor or "", (1, 0))  # unknown: the loader says so
            done(size, height, None)


def _load_python(path: str) -> loadtest_pb2.LoadTest:
    try:
        namespace = runpy.run_path(path, run_name="__chaperon_load_test__")
    except SystemExit:
        raise LoadTestFileError(f"{path}: the script exited while building the load test") from None
    except Exception as exc:  # noqa: BLE001 - user code; report it in one line
        raise LoadTestFileError(f"{path}: {type(exc).__name__}: {exc}") from None
    for name in ("load_test", "LOAD_TEST"):
        if name in namespace:
            value = namespace[name]
            break
    else:
        raise LoadTestFileError(f"{path}: define a module-level variable 'load_test'")
    if isinstance(value, loadtest_pb2.LoadTest):
        return value
    if hasattr(value, "to_proto"):
        return value.to_proto()  # type: ignore[no-any-return]
    return load_test_from_dict(value, path)
