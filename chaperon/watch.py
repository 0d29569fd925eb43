"""Live progress of a run, for ``chaperon watch ID``.

Theory of operation. The master streams a ``RunProgress`` per report interval
(``WatchLoadTestRun``) until the run ends; the last message carries the final
``LoadTestRun``. ``render_progress`` turns one message into a ``rich`` table (run id,
state, elapsed time, and per metric key the count, errors, rate and p50/p99 latency).
``watch`` consumes the stream: on a terminal it redraws a ``rich.live.Live`` display on each
message (no background refresh thread: the picture only changes when a message arrives);
elsewhere (a pipe, a file, CI logs) it prints one plain line per message, so the log stays
readable. When the stream ends it prints the final report (``chaperon.report``) and returns
the final run, or None if the stream ended without one (e.g. the connection dropped).
Ids and keys go through ``chaperon.core.text.printable``: a control character in one is
shown escaped, never sent to the terminal (rich leaves ESC alone).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from chaperon.core.text import printable
from chaperon.report import format_latency_us, format_report
from chaperon.v1 import master_pb2, results_pb2

__all__ = ["format_progress_line", "render_progress", "watch"]


def _state_name(state: int) -> str:
    try:
        return results_pb2.RunState.Name(state)
    except ValueError:  # a state newer than these stubs
        return str(state)


def _format_elapsed(elapsed_s: float) -> str:
    if elapsed_s < 60:
        return f"{elapsed_s:.1f}s"
    minutes, seconds = divmod(int(elapsed_s), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s"


def render_progress(progress: master_pb2.RunProgress) -> Table:
    """One progress message as a table: a title with id, state and elapsed, a row per key."""
    table = Table(
        # Text, not str: ids and keys are data, and "[...]" in them must not be read as markup.
        title=Text(
            f"{printable(progress.id)}  {_state_name(progress.state)}  "
            f"elapsed {_format_elapsed(progress.elapsed_s)}"
        ),
        title_justify="left",
    )
    table.add_column("metric", no_wrap=True)
    for name in ("count", "errors", "req/s", "p50", "p99"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in progress.metrics:
        table.add_row(
            Text(printable(m.key)),
            str(m.count),
            str(m.errors),
            f"{m.rate_per_s:.0f}",
            format_latency_us(m.p50_us),
            format_latency_us(m.p99_us),
        )
    return table


def format_progress_line(progress: master_pb2.RunProgress) -> str:
    """One progress message as a single plain line, for output that is not a terminal."""
    parts = [
        f"{printable(progress.id)} {_state_name(progress.state)} "
        f"{_format_elapsed(progress.elapsed_s)}"
    ]
    for m in progress.metrics:
        parts.append(
            f"{printable(m.key)}: count={m.count} errors={m.errors} rate={m.rate_per_s:.0f}/s "
            f"p50={format_latency_us(m.p50_us)} p99={format_latency_us(m.p99_us)}"
        )
    return " | ".join(parts)


def watch(
    progress_stream: Iterable[master_pb2.RunProgress], console: Console
) -> results_pb2.LoadTestRun | None:
    """Show the stream's progress on ``console``; print the final report and return the run.

    On a terminal (``console.is_terminal``) a live table is redrawn on each message;
    otherwise one plain line is printed per message. The final run is taken from the last
    message that carries one (the master sets it on the last message); when the stream ends
    without a run, nothing more is printed and None is returned. Errors from the stream
    (e.g. ``grpc.RpcError``) propagate after the live display has been closed.
    """
    final: results_pb2.LoadTestRun | None = None
    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as live:
            for progress in progress_stream:
                live.update(render_progress(progress), refresh=True)
                if progress.HasField("run"):
                    final = progress.run
    else:
        for progress in progress_stream:
            # out(), not print(): no markup in keys like "GET /[id]", no wrapping at width.
            console.out(format_progress_line(progress), highlight=False)
            if progress.HasField("run"):
                final = progress.run
    if final is None:
        return None
    run = results_pb2.LoadTestRun()
    run.CopyFrom(final)
    console.out(format_report(run), highlight=False)
    return run
