"""The one compiler of the session language (``docs/language.md``).

Front end, run by the master on every submission and by a worker on the entries of its
assignment: ``shape`` first (what the load test weighs, before any rule: sizes, counts, Struct
depth, control characters in names; ``graph``, the scenarios run by name, worked out once),
then ``check`` (a whole load test: config, load shape, thresholds) and ``check_steps``
(every step, field by field), which collect every problem with its field path into a
``problems.Collector`` and raise one domain error (``InvalidArgument`` with all the field
violations, else ``ResourceExhausted``, else ``Unimplemented``). No DNS: hosts are parsed,
and ``check_targets`` matches them against an allow-list.

Back end, run by a worker: ``plan.compile_assignment`` checks the entries, then ``emit``
(steps -> ops), ``render`` (requests -> bytes or templates) and ``templates`` (names and
placeholders -> parts) build one ``EnginePlan`` per share, asking a ``emit.Backend`` for what
depends on the machine (resolving a host, the allow-list, importing a python step).

``keys.metric_keys`` runs the same back end without the network (no DNS, no python step
imported) to learn a load test's metric keys before any request: the master orders a run's
metrics by the steps with it. An open-model entry's key that a closed-model entry also writes
is kept apart (``emit.OPEN_MODEL_SUFFIX``), on the workers and in that order alike.

Every limit is in ``limits`` (the engine's are ``_fastpath.engine``'s constants); messages
that more than one rule writes are in ``problems``; the config keys the language reads, and
the rule that refuses a misspelt one, are in ``config``. Module dependencies point one way:
limits <- problems <- templates <- render <- emit <- keys <- plan,
graph <- shape <- check <- plan, and graph, templates, config <- check_steps <- check.
"""

from __future__ import annotations

from chaperon.core.lang.check import check_entries, check_load_test, check_targets
from chaperon.core.lang.emit import OPEN_MODEL_SUFFIX, Backend
from chaperon.core.lang.keys import MetricKeys, metric_keys
from chaperon.core.lang.plan import EnginePlan, compile_assignment

__all__ = [
    "OPEN_MODEL_SUFFIX",
    "Backend",
    "EnginePlan",
    "MetricKeys",
    "check_entries",
    "check_load_test",
    "check_targets",
    "compile_assignment",
    "metric_keys",
]
