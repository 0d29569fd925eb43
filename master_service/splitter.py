"""How a load test's work is spread over workers: plain functions over plain data.

Theory of operation: every scenario entry of a load test asks for a number of sessions
(``Demand``). In the closed model that is its ``concurrency``: each worker gets a part of
the sessions, numbered from ``first_session`` so the parts never overlap. In the open model
it is the entry's session *slots* (``max_sessions`` of its arrival rate): each worker gets a
part of the slots, and the same fraction of the arrival rate (``rate_fraction``), so no
worker is sent arrivals it has no seat for. Parts follow the workers' capacities (engine
threads) by the largest-remainder method, so they add up to what was asked, exactly.

When a worker is lost mid-run, ``split_takeover`` spreads its open-model shares over the
survivors the same way: each share's slots by capacity, and each survivor's piece of the
share's rate fraction in proportion to the slots it takes (a survivor that takes all the
slots takes the very same fraction, so its schedule is the lost share's own and it carries on
from the arrival the lost worker had not reached: ``first_arrival``, which the run controller
works out). Closed-model sessions are never moved (a closed session's state died with its
worker).

Nothing here knows of threads, gRPC or the store; ``demands`` is the one function that reads
a ``LoadTest`` message, and ``to_entry_share`` the one that writes the wire form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chaperon.core.loadtest import max_sessions
from chaperon.v1 import loadtest_pb2, worker_pb2


@dataclass(frozen=True)
class Demand:
    """What one scenario entry asks for: ``sessions`` closed sessions, or open-model slots."""

    sessions: int
    open_model: bool = False


@dataclass(frozen=True)
class Share:
    """One worker's part of one scenario entry.

    Closed model: ``sessions`` sessions numbered from ``first_session``; ``rate_fraction``
    is 0. Open model: ``sessions`` slots and ``rate_fraction`` (> 0) of the entry's rate;
    a takeover's schedule resumes at ``first_arrival`` (arrivals before it were another
    worker's).
    """

    entry_index: int
    sessions: int
    first_session: int = 0
    rate_fraction: float = 0.0
    first_arrival: int = 0

    @property
    def open_model(self) -> bool:
        return self.rate_fraction > 0


def split_sessions(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` sessions over workers in proportion to capacity (largest remainder).

    The shares add up to ``total`` exactly; equal capacities give an even split with the
    remainder spread one each over the first workers. A capacity below 1 counts as 1.
    """
    if not capacities:
        return []
    weights = [max(1, c) for c in capacities]
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split(demands: Sequence[Demand], capacities: Sequence[int]) -> list[list[Share]]:
    """Each worker's shares (one list per capacity, in order; a list may be empty)."""
    per_worker: list[list[Share]] = [[] for _ in capacities]
    for index, demand in enumerate(demands):
        parts = split_sessions(demand.sessions, capacities)
        if demand.open_model:
            for worker, n in enumerate(parts):
                if n > 0:
                    per_worker[worker].append(
                        Share(entry_index=index, sessions=n, rate_fraction=n / demand.sessions)
                    )
            continue
        first = 0
        for worker, n in enumerate(parts):
            if n > 0:
                per_worker[worker].append(Share(entry_index=index, sessions=n, first_session=first))
            first += n
    return per_worker


def split_takeover(lost: Sequence[Share], capacities: Sequence[int]) -> list[list[Share]]:
    """The lost worker's open-model shares spread over survivors of ``capacities``.

    One list per survivor, in order (a list may be empty). Closed-model shares in ``lost``
    are left out: they cannot move. A piece that takes all of a share's slots keeps its
    fraction exactly (and so its schedule); ``first_arrival`` is left for the caller to set.
    """
    per_survivor: list[list[Share]] = [[] for _ in capacities]
    for share in lost:
        if not share.open_model or share.sessions <= 0:
            continue
        for survivor, slots in enumerate(split_sessions(share.sessions, capacities)):
            if slots > 0:
                fraction = share.rate_fraction
                if slots != share.sessions:
                    fraction = share.rate_fraction * slots / share.sessions
                per_survivor[survivor].append(
                    Share(entry_index=share.entry_index, sessions=slots, rate_fraction=fraction)
                )
    return per_survivor


def demands(load_test: loadtest_pb2.LoadTest) -> list[Demand]:
    """What each scenario entry of ``load_test`` asks for, in entry order."""
    out = []
    for entry in load_test.scenarios:
        if entry.HasField("arrival_rate"):
            out.append(Demand(sessions=max_sessions(entry.arrival_rate), open_model=True))
        else:
            out.append(Demand(sessions=entry.concurrency))
    return out


def to_entry_share(share: Share) -> worker_pb2.EntryShare:
    """The wire form of a share, as a worker's ``Assignment`` carries it."""
    if share.open_model:
        return worker_pb2.EntryShare(
            entry_index=share.entry_index,
            sessions=share.sessions,
            rate_fraction=share.rate_fraction,
            first_arrival=share.first_arrival,
        )
    return worker_pb2.EntryShare(
        entry_index=share.entry_index, sessions=share.sessions, first_session=share.first_session
    )
