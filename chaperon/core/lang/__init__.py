"""The one compiler of the session language (``docs/language.md``).

Front end, run by the master on every submission and by a worker on the entries of its
assignment: ``check`` (a whole load test: config, load shape, thresholds) and ``check_steps``
(every step, field by field), which collect every problem with its field path into a
``problems.Collector`` and raise one domain error (``InvalidArgument`` with all the field
violations, else ``ResourceExhausted``, else ``Unimplemented``). No DNS: hosts are parsed,
and ``check_targets`` matches them against an allow-list.

Back end, run by a worker: ``plan.compile_assignment`` checks the entries, then ``emit``
(steps -> ops), ``render`` (requests -> bytes or templates) and ``templates`` (names and
placeholders -> parts) build one ``EnginePlan`` per share, asking a ``emit.Backend`` for what
depends on the machine (resolving a host, the allow-list, importing a python step).

Every limit is in ``limits`` (the engine's are ``_fastpath.engine``'s constants); messages
that more than one rule writes are in ``problems``. Module dependencies point one way:
limits <- problems <- templates <- render <- emit <- plan, and check_steps <- check <- plan.
"""

from __future__ import annotations

from chaperon.core.lang.check import check_entries, check_load_test, check_targets
from chaperon.core.lang.emit import Backend
from chaperon.core.lang.plan import EnginePlan, compile_assignment

__all__ = [
    "Backend",
    "EnginePlan",
    "check_entries",
    "check_load_test",
    "check_targets",
    "compile_assignment",
]
