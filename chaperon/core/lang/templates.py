"""The session language's names and templates, as the compiler's back end (``emit``) sees them.

A template is text with ``{{name}}`` placeholders (``chaperon.core.loadtest.split_template`` parses
it). The compiler turns one into *parts*, the form the engine takes: a list of ``bytes``
(literal) and ``int`` (a variable slot >= 0, or ``VAR_SESSION_ID`` / ``VAR_ITERATION``), with
adjacent literals merged. A name means, in this order:

1. a session variable, when some step of the plan sets it (``assign``, ``update_assign``,
   ``extract.var``, ``ws_recv.assign``): a slot, read by the engine at run time;
2. a built-in, ``session_id`` or ``iteration``: rendered by the engine as a decimal number;
3. a config key (``{{a.b}}`` looks into nested objects): substituted here, once, as literal
   text (strings as they are, other values as compact JSON, integral numbers without ".0");
4. otherwise, when the plan has a ``python`` step (which may set any name), a variable slot;
   else it is a mistake, refused with InvalidArgument naming the field (``check_steps``
   refuses it first, with the same message; here only a named scenario inlined under another
   config can still meet one).

Where a template sits decides how its *literal* text is escaped: percent-encoding in query
strings and form bodies, JSON string escapes inside JSON strings, none elsewhere. A runtime
value (variable or built-in) is inserted as is, never escaped: the engine copies bytes. So a
variable used inside a JSON string must not hold quotes or backslashes, and one in a query
string must already be URL-safe.

``chaperon.core.loadtest.Inventory`` is the pre-pass over a plan's steps (and the scenarios they
refer to) that finds which names are variables, which WebSocket connections and child sessions
exist, and whether a python step is present, before any op is emitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from _fastpath.engine import VAR_ITERATION, VAR_SESSION_ID
from chaperon.core.errors import InvalidArgument
from chaperon.core.lang.limits import MAX_VARIABLES
from chaperon.core.lang.problems import not_a_config_value, too_many_variables, unknown_name
from chaperon.core.loadtest import Inventory, Placeholder, split_template

Parts = list[bytes | int]

BUILTINS = {"session_id": VAR_SESSION_ID, "iteration": VAR_ITERATION}


def invalid(field_path: str, what: str) -> InvalidArgument:
    """The error for one bad field."""
    return InvalidArgument([(field_path, what)])


def literal_text(value: Any) -> str:
    """A config value as template text: strings as is, integral numbers without ".0"."""
    if isinstance(value, str):
        return value
    return json.dumps(_tidy(value), separators=(",", ":"), sort_keys=True)


def _tidy(value: Any) -> Any:
    """Struct numbers are all floats: give back ints where they are integral."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) < 2**53:
            return int(value)
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    return value


def config_lookup(config: dict[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) of ``a.b.c`` in nested config dicts."""
    value: Any = config
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def join(parts: Iterable[bytes | int]) -> Parts:
    """Merge adjacent literals and drop empty ones."""
    out: Parts = []
    for part in parts:
        if isinstance(part, bytes):
            if not part:
                continue
            if out and isinstance(out[-1], bytes):
                out[-1] = out[-1] + part
                continue
        out.append(part)
    return out


def is_constant(parts: Parts) -> bool:
    return all(isinstance(p, bytes) for p in parts)


def constant(parts: Parts) -> bytes:
    return b"".join(p for p in parts if isinstance(p, bytes))


def json_escape(text: str) -> str:
    """Text as the inside of a JSON string (what ``json.dumps`` puts between the quotes)."""
    return json.dumps(text)[1:-1]


class Names:
    """Template resolution and the plan's variable slots (``var_names``)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.var_names: list[str] = []
        self._slots: dict[str, int] = {}

    def slot(self, name: str, field_path: str) -> int:
        """The slot of variable ``name`` (a new one the first time)."""
        if name not in self._slots:
            if len(self.var_names) >= MAX_VARIABLES:
                raise invalid(field_path, too_many_variables())
            self._slots[name] = len(self.var_names)
            self.var_names.append(name)
        return self._slots[name]

    def is_variable(self, name: str) -> bool:
        """Whether ``name`` may hold a value at run time (for reads such as add_metric.var)."""
        return name in self.inventory.assigned or self.inventory.python

    def render(
        self,
        text: str,
        field_path: str,
        config: dict[str, Any],
        *,
        escape: Callable[[str], str] | None = None,
        encoding: str = "utf-8",
        runtime: bool = True,
    ) -> Parts:
        """``text`` as parts (see the module docstring); ``escape`` applies to literal text
        only; ``runtime=False`` refuses variables and built-ins."""
        try:
            pieces = split_template(text)
        except ValueError as exc:
            raise invalid(field_path, str(exc)) from None
        out: list[bytes | int] = []
        for piece in pieces:
            if isinstance(piece, Placeholder):
                resolved = self._resolve(piece.name, field_path, config)
                if isinstance(resolved, int):
                    if not runtime:
                        raise invalid(field_path, not_a_config_value(piece.name))
                    out.append(resolved)
                    continue
                piece = resolved
            literal = escape(piece) if escape else piece
            out.append(literal.encode(encoding, "replace"))
        return join(out)

    def _resolve(self, name: str, field_path: str, config: dict[str, Any]) -> int | str:
        if name in self.inventory.assigned:
            return self.slot(name, field_path)
        if name in BUILTINS:
            return BUILTINS[name]
        found, value = config_lookup(config, name)
        if found:
            return literal_text(value)
        if self.inventory.python:
            return self.slot(name, field_path)
        raise invalid(field_path, unknown_name(name))

    def render_json(self, value: Any, field_path: str, config: dict[str, Any]) -> Parts:
        """A JSON value (from a protobuf Value) as compact JSON parts; templates in strings
        are rendered inside the string (literal text JSON-escaped, runtime values as is)."""
        out: list[bytes | int] = []

        def walk(v: Any) -> None:
            if isinstance(v, dict):
                out.append(b"{")
                # A protobuf Struct is a map: its order differs from process to process, so
                # keys are written sorted (the same bytes on every worker).
                for i, (key, item) in enumerate(sorted(v.items())):
                    out.append((b"," if i else b"") + json.dumps(key).encode() + b":")
                    walk(item)
                out.append(b"}")
            elif isinstance(v, list):
                out.append(b"[")
                for i, item in enumerate(v):
                    if i:
                        out.append(b",")
                    walk(item)
                out.append(b"]")
            elif isinstance(v, str):
                out.append(b'"')
                out.extend(self.render(v, field_path, config, escape=json_escape))
                out.append(b'"')
            else:
                out.append(json.dumps(_tidy(v)).encode())

        walk(value)
        return join(out)
