"""The config keys the language reads, and the rule that refuses a misspelt one.

A session's config (``LoadTest.config``, an entry's ``config``, a ``run_scenario``'s
``config``) is a JSON object: some keys are the language's own options (``CONFIG_KEYS``), any
other key is the user's, read by templates (``{{user}}``, ``{{auth.name}}``). So a misspelt
option (``request_timout``) would be taken as a key of the user's and silently do nothing:
the timeout stays 30 s and nobody is told. ``misspelt_keys`` refuses a key that is not an
option, that no template of the load test reads, and that is within two edits of an option
(``spelling.closest``), naming the option: ``config.request_timout: unknown config key (did
you mean 'request_timeout'?)``. A key of the user's that some template reads is never
refused, nor one far from every option.

The load test's templates are looked for only when a key is suspect (rare): every text of
the load test is searched for ``{{name}}`` placeholders, whatever the field (more than the
template fields: a name read anywhere counts as read, so nothing used is ever refused).
"""

from __future__ import annotations

from typing import Any

from chaperon.core.lang.problems import Collector
from chaperon.core.loadtest import placeholder_names
from chaperon.core.spelling import MAX_EDITS, closest
from chaperon.core.text import printable
from chaperon.v1 import loadtest_pb2

# Every key of a config that the compiler or the engine reads (docs/language.md).
CONFIG_KEYS = (
    "base_url",
    "connect_timeout",
    "request_timeout",
    "cookies",
    "max_capture",
    "metrics_filter",
    "metrics_strip_query",
    "tls_ca_file",
    "tls_insecure",
)

UNKNOWN_CONFIG_KEY = "unknown config key"


class TemplateNames:
    """The first part of every ``{{name}}`` in a load test's text, found on first use."""

    def __init__(self, load_test: loadtest_pb2.LoadTest) -> None:
        self._load_test = load_test
        self._names: set[str] | None = None

    def __contains__(self, key: str) -> bool:
        if self._names is None:
            self._names = {name.split(".", 1)[0] for name in _all_names(self._load_test)}
        return key in self._names


def misspelt_keys(c: Collector, path: str, config: dict[str, Any], read: TemplateNames) -> None:
    """Refuse each top-level key of ``config`` that looks like a misspelt option."""
    for key in config:
        if key in CONFIG_KEYS:
            continue
        known = closest(key, CONFIG_KEYS, MAX_EDITS)
        if known is not None and key not in read:
            c.bad(f"{path}.{printable(key)}", f"{UNKNOWN_CONFIG_KEY} (did you mean {known!r}?)")


def _all_names(load_test: loadtest_pb2.LoadTest) -> list[str]:
    """Every placeholder name in any text of the message (fields, map keys and values, JSON
    strings), with an explicit stack. Bounded: the load test has been weighed (``shape``)."""
    names: list[str] = []
    stack: list[Any] = [load_test]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "{{" in item:
                names += placeholder_names(item)
        elif hasattr(item, "ListFields"):
            for _field, value in item.ListFields():
                _push(stack, value)
    return names


def _push(stack: list[Any], value: Any) -> None:
    """A field's value onto the stack: a text or a message, or each of a map's keys and
    values, or each item of a repeated field (numbers, bytes and booleans hold no name)."""
    if isinstance(value, str) or hasattr(value, "ListFields"):
        stack.append(value)
    elif hasattr(value, "items"):  # a map field
        for key, item in value.items():
            stack.append(key)
            _push(stack, item)
    elif not isinstance(value, (bytes, int, float)):  # a repeated field
        for item in value:
            _push(stack, item)
