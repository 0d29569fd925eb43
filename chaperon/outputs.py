"""The files ``chaperon run`` writes a run to: checked before any load is sent, and never
the reason a finished run is lost.

Theory of operation. An ``Output`` is what the command line asked for: an exporter format,
a path (or None: the exporter's default path, ``results/<date>/<load test>/<tag>-<ts>``),
and whether existing files may be overwritten (``--force``). ``check`` runs before the load
test is submitted and refuses, as one line (``OutputError``), what would fail after it: a
named file that exists (without ``--force``), a directory where a file is named, a parent
that is a regular file, a folder that cannot be written. It creates nothing.

A named output writes exactly the file it names; the default path writes the load test
beside the output too (``<stem>.load_test.json``, see ``chaperon.exporters``), in the
results tree Chaperon owns.

``write`` runs after the report has been printed. If an output cannot be written anyway
(the disk filled, the folder vanished), the run is not lost: ``save_run`` writes it as proto3
JSON to ``./chaperon-run-<id>.json`` (or, if the working directory cannot take it, a file
in the temporary directory), and the message says where.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import tempfile

from chaperon.core.text import printable
from chaperon.exporters import export, to_json
from chaperon.v1 import results_pb2

__all__ = ["Output", "OutputError", "check", "save_run", "write"]

#: The exporters' default root (``chaperon.exporters.default_path``), relative to the cwd.
DEFAULT_ROOT = "results"


class OutputError(Exception):
    """An output that cannot be written; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class Output:
    fmt: str
    path: str | None = None  # None: the exporter's default path
    force: bool = False


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path at worst)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return pathlib.Path(".")


def _check_folder(folder: pathlib.Path, shown: str) -> None:
    """The folder a file goes to can be made and written (it is created later, if needed)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputError(f"cannot write {shown}: {printable(str(existing))} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {shown}: {printable(str(existing))} is not writable")


def check(output: Output) -> None:
    """Raise ``OutputError`` if ``output`` would be refused or fail once the run is over."""
    if output.path is None:
        _check_folder(pathlib.Path(DEFAULT_ROOT), f"{DEFAULT_ROOT}/")
        return
    path = pathlib.Path(output.path)
    shown = printable(output.path)
    if path.is_dir():
        raise OutputError(f"{shown} is a directory; name a file to write")
    if os.path.lexists(path):
        if not output.force:
            raise OutputError(f"{shown} exists; pass --force to overwrite it")
        if not os.access(path, os.W_OK):
            raise OutputError(f"cannot write {shown}: it is not writable")
        return
    _check_folder(path.parent, shown)


def _safe_id(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).strip(".") or "unknown"


def save_run(run: results_pb2.LoadTestRun) -> pathlib.Path:
    """Write ``run`` as proto3 JSON where it cannot clobber anything; return the path.

    ``./chaperon-run-<id>.json`` (never overwritten), else a new file in the temporary
    directory. Raises ``OSError`` only when neither can be written."""
    text = to_json(run) + "\n"
    name = f"chaperon-run-{_safe_id(run.id)}"
    try:
        path = pathlib.Path(f"{name}.json")
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
        return path
    except OSError:
        pass
    fd, temp = tempfile.mkstemp(prefix=f"{name}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return pathlib.Path(temp)


def _problem(exc: OSError, output: Output) -> str:
    where = str(exc.filename if exc.filename is not None else output.path or DEFAULT_ROOT)
    ours = where == output.path or (
        output.path is None and where.endswith((f".{output.fmt}", ".load_test.json"))
    )
    if isinstance(exc, FileExistsError) and ours:
        # Not from a folder in the way: the file itself exists (it appeared since the check).
        return f"{printable(where)} exists; not overwritten (--force overwrites)"
    reason = exc.strerror or str(exc)
    if output.path is not None and where != output.path:  # a folder on the way
        return f"cannot write {printable(output.path)}: {printable(where)}: {reason}"
    return f"cannot write {printable(where)}: {reason}"


def write(run: results_pb2.LoadTestRun, outputs: list[Output]) -> tuple[list[str], list[str]]:
    """Write ``run`` to each output; (what was written, problems), one line each.

    A problem ends with where the run was saved instead (``save_run``), once."""
    written: list[str] = []
    problems: list[str] = []
    for output in outputs:
        try:
            paths = export(
                run,
                output.fmt,
                output.path,
                overwrite=output.force,
                beside=output.path is None,
            )
        except OSError as exc:
            problems.append(_problem(exc, output))
        else:
            written.extend(printable(str(p)) for p in paths)
    if problems:
        try:
            saved = save_run(run)
        except OSError as exc:
            problems.append(f"the run could not be saved anywhere either: {exc}")
        else:
            problems.append(f"the run is saved as JSON in {printable(str(saved))}")
    return written, problems
