"""Whether a service's background loops can go on, as one flag its health check follows.

A background loop (the master's runner, its store writer, a worker's membership loop) that
meets an error it cannot get past reports it here with ``fail(component, reason)`` and goes
on trying; when it works again it says ``ok(component)``. The service is serving while no
component has a problem. The servers (``master_service.server``, ``worker_service.server``)
turn every change into the gRPC health status of the server and its service, so an operator
or an orchestrator sees NOT_SERVING, and the log says why, instead of a service that accepts
work and never does it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[[bool, str], None]


class ServiceHealth:
    """The open problems of a service's components; listeners hear every change of the whole.

    Thread-safe. A listener is called with ``(serving, reason)`` (``reason`` lists the open
    problems, empty when serving) under this object's lock, in the order of the changes; it
    must not call back into this object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}
        self._listeners: list[Listener] = []

    @property
    def serving(self) -> bool:
        with self._lock:
            return not self._problems

    @property
    def reason(self) -> str:
        with self._lock:
            return self._summary()

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` now with the current state, then on every change."""
        with self._lock:
            self._listeners.append(listener)
            self._tell(listener)

    def fail(self, component: str, reason: str) -> None:
        """``component`` cannot do its work (it keeps trying); logged once per new reason."""
        with self._lock:
            if self._problems.get(component) == reason:
                return
            self._problems[component] = reason
            log.error("%s cannot go on: %s; health is NOT_SERVING until it can", component, reason)
            self._notify()

    def ok(self, component: str) -> None:
        """``component`` works (again)."""
        with self._lock:
            if self._problems.pop(component, None) is None:
                return
            log.warning("%s works again", component)
            self._notify()

    def _summary(self) -> str:
        return "; ".join(f"{c}: {r}" for c, r in sorted(self._problems.items()))

    def _notify(self) -> None:
        for listener in self._listeners:
            self._tell(listener)

    def _tell(self, listener: Listener) -> None:
        try:
            listener(not self._problems, self._summary())
        except Exception:  # noqa: BLE001 - a broken listener must not break the loop reporting
            log.exception("a health listener failed")
