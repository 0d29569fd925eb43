"""``chaperon.outputs`` (outputs checked before a run, a run never lost after it) and
``chaperon.interrupt`` (the first SIGINT stops the run, keeping it) without processes.

The second SIGINT ends the process (``os._exit``): that is tested through the real command
in ``tests/system/test_cli_interrupt.py``, not here.
"""

from __future__ import annotations

import json
import signal
import threading

import pytest

from chaperon.interrupt import GracefulInterrupt, final_of
from chaperon.outputs import Output, OutputError, check, save_run, write
from chaperon.v1 import master_pb2, results_pb2


def _run() -> results_pb2.LoadTestRun:
    run = results_pb2.LoadTestRun(id="run-abc123", state=results_pb2.CANCELLED)
    run.load_test.name = "smoke"
    run.result.metrics.add(key="GET /", count=7)
    return run


# -- check: before the run ----------------------------------------------------------------------


def test_check_accepts_a_new_file_in_a_folder_to_be_made(tmp_path):
    check(Output("csv", str(tmp_path / "new" / "deeper" / "out.csv")))
    assert not (tmp_path / "new").exists()  # nothing is created by the check


def test_check_refuses_an_existing_file_unless_forced(tmp_path):
    out = tmp_path / "out.html"
    out.write_text("kept")
    with pytest.raises(OutputError, match=r"out\.html exists; pass --force to overwrite it$"):
        check(Output("html", str(out)))
    check(Output("html", str(out), force=True))
    assert out.read_text() == "kept"


def test_check_refuses_a_directory_and_a_folder_that_is_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="is a directory; name a file to write"):
        check(Output("csv", str(tmp_path), force=True))
    with pytest.raises(OutputError, match=r"notes\.txt is not a directory"):
        check(Output("csv", str(tmp_path / "notes.txt" / "a" / "out.csv")))


def test_check_of_the_default_path_looks_at_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check(Output("json"))
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OutputError, match="cannot write results/: results is not a directory"):
        check(Output("json"))


# -- write and save_run: after the run ----------------------------------------------------------


def test_a_named_output_writes_only_what_it_names(tmp_path):
    out = tmp_path / "out.csv"
    written, problems = write(_run(), [Output("csv", str(out))])
    assert problems == []
    assert written == [str(out)]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert "GET /,7," in out.read_text()


def test_the_default_path_writes_the_load_test_beside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written, problems = write(_run(), [Output("json")])
    assert problems == []
    assert len(written) == 2 and written[1].endswith(".load_test.json")


def test_a_failed_write_saves_the_run_and_says_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").write_text("in the way")
    written, problems = write(_run(), [Output("csv", "sub/out.csv")])
    assert written == []
    assert problems[0].startswith("cannot write sub/out.csv: sub: ")
    assert problems[-1] == "the run is saved as JSON in chaperon-run-run-abc123.json"
    saved = json.loads((tmp_path / "chaperon-run-run-abc123.json").read_text())
    assert saved["id"] == "run-abc123" and saved["result"]["metrics"][0]["count"] == "7"


def test_an_output_that_appeared_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.csv").write_text("appeared")
    _, problems = write(_run(), [Output("csv", "out.csv")])
    assert problems[0] == "out.csv exists; not overwritten (--force overwrites)"
    assert (tmp_path / "out.csv").read_text() == "appeared"


def test_save_run_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = save_run(_run())
    second = save_run(_run())
    assert first.name == "chaperon-run-run-abc123.json"
    assert second != first and second.exists()  # in the temporary directory
    second.unlink()


# -- GracefulInterrupt ----------------------------------------------------------------------------


def test_sigint_before_a_run_is_a_keyboard_interrupt():
    with GracefulInterrupt() as interrupt, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert not interrupt.requested.is_set()


def test_first_sigint_stops_the_run_on_a_thread_and_says_so(capsys):
    stopped = threading.Event()
    callers: list[str] = []

    def stop() -> None:
        callers.append(threading.current_thread().name)
        stopped.set()

    previous = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as interrupt:
        interrupt.attach(stop)
        signal.raise_signal(signal.SIGINT)
        assert stopped.wait(5)
        interrupt.finished()
    assert signal.getsignal(signal.SIGINT) is previous  # restored
    assert interrupt.requested.is_set()
    assert callers == ["chaperon-cancel"]
    err = capsys.readouterr().err
    assert "stopping: cancelling the run and keeping what it measured" in err
    assert "Ctrl-C again to quit at once" in err


def test_a_sigint_before_attach_with_a_run_to_come_is_acted_on_at_attach():
    stopped = threading.Event()
    interrupt = GracefulInterrupt()
    interrupt.requested.set()  # as if the first Ctrl-C came while the run was submitted
    interrupt.attach(stopped.set)
    assert stopped.wait(5)
    interrupt.finished()


def test_final_of_takes_the_run_of_the_last_message():
    run = _run()
    stream = [
        master_pb2.RunProgress(id=run.id, state=results_pb2.RUNNING),
        master_pb2.RunProgress(id=run.id, state=results_pb2.CANCELLED, run=run),
    ]
    assert final_of(stream) == run
    assert final_of(stream[:1]) is None
