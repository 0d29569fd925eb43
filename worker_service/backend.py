"""What only a worker does for the compiler: resolve targets, guard them, load python steps.

``chaperon.core.lang`` compiles a load test the same way everywhere; the parts that depend on
the machine it will run on are this ``Backend``: a target host is resolved once and each of
its addresses matched against the worker's allow-list; the engine connects (and reconnects)
to the checked address only, never to the name. A
python step's function is imported, only on a worker started with ``--allow-python-steps``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from chaperon.core.allowlist import AllowList
from chaperon.core.errors import InvalidArgument, PermissionDenied
from chaperon.core.loadtest import Target


def import_function(spec: str, field_path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function, imported now (InvalidArgument if not)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgument([(field_path, f"{spec!r} is not 'module:function'")])
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - user code: any failure is the user's to fix
        raise InvalidArgument(
            [(field_path, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")]
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InvalidArgument([(field_path, f"{module_name!r} has no {attr!r}")])
    if not callable(target):
        raise InvalidArgument([(field_path, f"{spec!r} is not callable")])
    return target  # type: ignore[no-any-return]


class WorkerBackend:
    """The ``chaperon.core.lang.emit.Backend`` of a worker."""

    def __init__(self, allow: AllowList, allow_python: bool = False) -> None:
        self.allow = allow
        self.allow_python = allow_python

    def target(self, target: Target, field_path: str) -> tuple[Any, ...]:
        # One lookup: the address connected to is the address the allow-list checked (the
        # engine connects to it, and reconnects to it, never to the name).
        try:
            ip = self.allow.checked_address(target.host, target.port, field_path)
        except OSError as exc:
            raise InvalidArgument(
                [(field_path, f"cannot resolve host {target.host!r}: {exc}")]
            ) from None
        if target.scheme == "https":
            # Verified against the name in the URL (SNI too, unless it is an IP literal).
            return (ip, target.port, True, target.host)
        return (ip, target.port)

    def python_function(self, spec: str, field_path: str) -> Callable[..., Any]:
        if not self.allow_python:
            raise PermissionDenied(
                f"{field_path}: this worker does not run python steps; start it with"
                " --allow-python-steps (chaperon run allows them)"
            )
        return import_function(spec, field_path)
