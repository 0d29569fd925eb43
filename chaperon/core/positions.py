"""Where a field of a load-test file is written: its line, for the messages that refuse it.

A problem is found on the values read from the file (``jsonform``, with the keys as written)
or by the master on the message (a field path such as ``scenarios[0].config.request_timout``),
and the person who fixes it reads the file. So ``Positions`` keeps the file's text and finds
the line of a field only when a message needs one: nothing is spent on a good file.

- YAML: the text is composed again into its node tree (libyaml's composer, whose nodes keep
  their marks; the file has passed ``files``' limits already) and the path followed through
  it. A key's line is where the key is written, an item's where the item starts; a key that
  comes from a merge (``<<: *defaults``) is found where the anchor writes it, as the loader
  takes it (keys of the mapping itself first, then the merged mappings in order).
- JSON: a small walk over the text with the ``json`` module's own pieces (``scanstring`` for
  keys, ``raw_decode`` to step over values), following the path; of duplicate keys the last
  counts, as ``json.loads`` takes it.

A field path names fields in snake_case, and the file may spell them in lowerCamelCase
(proto3 JSON accepts both): each name is looked for as written first, then in the other
spelling. When anything does not match (a path through something the file does not hold, a
key escaped in the path, text that changed), the answer is no line rather than a wrong one;
only a last field that is missing (``is required``) is given the line of the object that
lacks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

Where = Sequence[str | int]
# A step along a path: an index, or a key given in the spellings to try, in order.
_Segment = int | tuple[str, ...]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[([^\]]*)\]")
_YAML_STR = "tag:yaml.org,2002:str"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_MAX_MERGE_DEPTH = 100


class Positions:
    """The lines of a load-test file's fields (``kind`` "json" or "yaml"); ``prefix`` is the
    path of the load test in the document (``("load_test",)`` in a request body)."""

    def __init__(self, text: str, kind: str, prefix: Where = ()) -> None:
        self._text = text
        self._kind = kind
        self.prefix: tuple[str | int, ...] = tuple(prefix)

    def line(self, where: Where) -> int | None:
        """The line (from 1) of the key or item at ``where``: keys as written, from the top of
        the document; None when the path is not found as it is."""
        return self._find([k if isinstance(k, int) else (k,) for k in where], False)

    def line_of_field(self, field_path: str) -> int | None:
        """The line of a field path of the load test (``scenarios[0].duration``, as the
        master's checks write them); the line of its object when only the last field is
        missing (and the object is not the load test itself); None when it cannot be told."""
        segments = _field_segments(field_path)
        if segments is None:
            return None
        prefix: list[_Segment] = [k if isinstance(k, int) else (k,) for k in self.prefix]
        # The line of the object that lacks a field, but never the top of the document.
        return self._find(prefix + segments, len(segments) > 1)

    def _find(self, segments: list[_Segment], missing_last_ok: bool) -> int | None:
        try:
            if self._kind == "yaml":
                return _yaml_line(self._text, segments, missing_last_ok)
            return _json_line(self._text, segments, missing_last_ok)
        except Exception:  # noqa: BLE001 - text that does not follow (it changed since): no line
            return None


def _field_segments(field_path: str) -> list[_Segment] | None:
    """``a.b_c[0][X-Id]`` -> [("a",), ("b_c", "bC"), 0, ("X-Id",)]; None if it does not parse."""
    out: list[_Segment] = []
    pos = 0
    for match in _PATH_PART.finditer(field_path):
        if match.start() != pos:
            return None
        pos = match.end()
        name, bracket = match.group(1), match.group(2)
        if name is not None:
            camel = _camel(name)
            out.append((name, camel) if camel != name else (name,))
        elif bracket.isdigit():
            out.append(int(bracket))
        else:
            out.append((bracket,))
    return out if pos == len(field_path) and out else None


def _camel(name: str) -> str:
    """protobuf's JSON name of a field: ``session_name`` -> ``sessionName``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# -- YAML ----------------------------------------------------------------------------------------


def _yaml_line(text: str, segments: list[_Segment], missing_last_ok: bool) -> int | None:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    node = yaml.compose(text, Loader=loader)
    if node is None:
        return None
    line: int = node.start_mark.line
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if isinstance(segment, int):
            if not isinstance(node, yaml.SequenceNode) or not 0 <= segment < len(node.value):
                return line + 1 if last and missing_last_ok else None
            node = node.value[segment]
            line = node.start_mark.line
            continue
        if not isinstance(node, yaml.MappingNode):
            return None
        member = None
        for spelling in segment:
            member = _yaml_member(node, spelling, 0)
            if member is not None:
                break
        if member is None:
            return line + 1 if last and missing_last_ok else None
        key, node = member
        line = key.start_mark.line
    return line + 1


def _yaml_member(node: Any, key: str, depth: int) -> tuple[Any, Any] | None:
    """(key node, value node) of ``key`` in a mapping node, as the safe loader takes it: the
    mapping's own last one, else the first merged mapping's."""
    import yaml

    found = None
    merges = []
    for key_node, value_node in node.value:
        if key_node.tag == _YAML_MERGE:
            merges.append(value_node)
        elif isinstance(key_node, yaml.ScalarNode) and key_node.tag == _YAML_STR:
            if key_node.value == key:
                found = (key_node, value_node)
    if found is not None or depth >= _MAX_MERGE_DEPTH:
        return found
    for merged in merges:
        sources = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
        for source in sources:
            if isinstance(source, yaml.MappingNode):
                inner = _yaml_member(source, key, depth + 1)
                if inner is not None:
                    return inner
    return None


# -- JSON ----------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # (C or Python)


def _ws(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _json_line(text: str, segments: list[_Segment], missing_last_ok: bool) -> int | None:
    pos = _ws(text, 0)
    at = pos  # where the current key or item is written
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        found = (
            _json_item(text, pos, segment)
            if isinstance(segment, int)
            else _json_member(text, pos, segment)
        )
        if found is None:
            if last and missing_last_ok and text[pos : pos + 1] in ("{", "["):
                return text.count("\n", 0, at) + 1
            return None
        at, pos = found
    return text.count("\n", 0, at) + 1


def _json_item(text: str, pos: int, index: int) -> tuple[int, int] | None:
    """(start, start) of item ``index`` of the array at ``pos``."""
    if text[pos] != "[":
        return None
    pos = _ws(text, pos + 1)
    if text[pos] == "]":
        return None
    for _ in range(index):
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
        if text[pos] != ",":
            return None
        pos = _ws(text, pos + 1)
    return pos, pos


def _json_member(text: str, pos: int, spellings: tuple[str, ...]) -> tuple[int, int] | None:
    """(where the key is, where its value starts) of the object at ``pos``: the last key of
    the first spelling found."""
    if text[pos] != "{":
        return None
    found: dict[str, tuple[int, int]] = {}
    pos = _ws(text, pos + 1)
    if text[pos] == "}":
        return None
    while True:
        if text[pos] != '"':
            return None
        key_at = pos
        key, pos = _scanstring(text, pos + 1)
        pos = _ws(text, pos)
        if text[pos] != ":":
            return None
        pos = _ws(text, pos + 1)
        if key in spellings:
            found[key] = (key_at, pos)
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _ws(text, pos)
        if text[pos] == "}":
            break
        if text[pos] != ",":
            return None
        pos = _ws(text, pos + 1)
    for spelling in spellings:
        if spelling in found:
            return found[spelling]
    return None
