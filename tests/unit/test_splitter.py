"""The splitter: who gets which sessions, and who takes over a lost worker's arrival rate.

Plain functions over plain data: no gRPC, no threads. Examples first, then properties over
random demands and capacities (hypothesis).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.loadtests import minimal_load_test

from chaperon.core.loadtest import load_test_from_dict
from master_service.splitter import (
    Demand,
    Share,
    demands,
    split,
    split_sessions,
    split_takeover,
    to_entry_share,
)


@pytest.mark.parametrize(
    ("total", "caps", "want"),
    [
        (10, [1, 1], [5, 5]),
        (11, [2, 2, 2], [4, 4, 3]),
        (7, [1, 3], [2, 5]),
        (1, [4, 4], [1, 0]),
        (0, [1], [0]),
        (5, [], []),
        (3, [0, 0, 0], [1, 1, 1]),  # a capacity below 1 counts as 1
    ],
)
def test_split_sessions(total: int, caps: list[int], want: list[int]) -> None:
    assert split_sessions(total, caps) == want


def test_closed_sessions_are_numbered_without_overlap() -> None:
    (a, b, c) = split([Demand(10)], [1, 2, 2])
    assert a == [Share(entry_index=0, sessions=2, first_session=0)]
    assert b == [Share(entry_index=0, sessions=4, first_session=2)]
    assert c == [Share(entry_index=0, sessions=4, first_session=6)]


def test_open_model_rate_follows_the_slots() -> None:
    (a, b) = split([Demand(10, open_model=True)], [1, 3])
    assert a == [Share(entry_index=0, sessions=3, rate_fraction=0.3)]
    assert b == [Share(entry_index=0, sessions=7, rate_fraction=0.7)]


def test_a_worker_with_nothing_to_do_gets_no_share() -> None:
    assert split([Demand(1), Demand(1, open_model=True)], [1, 1, 1]) == [
        [Share(0, 1, 0), Share(1, 1, rate_fraction=1.0)],
        [],
        [],
    ]


def test_entries_keep_their_index() -> None:
    (only,) = split([Demand(2), Demand(3, open_model=True), Demand(1)], [4])
    assert [s.entry_index for s in only] == [0, 1, 2]
    assert [s.open_model for s in only] == [False, True, False]


def test_takeover_moves_the_open_share_by_capacity() -> None:
    lost = [Share(entry_index=0, sessions=5, rate_fraction=0.5)]
    assert split_takeover(lost, [1]) == [[Share(0, 5, rate_fraction=0.5)]]
    (a, b) = split_takeover(lost, [1, 4])
    assert a == [Share(0, 1, rate_fraction=0.1)]
    assert b == [Share(0, 4, rate_fraction=0.4)]


def test_a_single_survivor_takes_the_very_same_fraction() -> None:
    # 0.1 * 3 / 3 is not 0.1 in floating point: the survivor's schedule would not be the lost
    # share's own, and its arrivals would not carry on from where that one stopped.
    assert 0.1 * 3 / 3 != 0.1
    assert split_takeover([Share(0, 3, rate_fraction=0.1)], [2]) == [
        [Share(0, 3, rate_fraction=0.1)]
    ]
    assert to_entry_share(Share(0, 3, rate_fraction=0.1, first_arrival=42)).first_arrival == 42


def test_takeover_leaves_closed_shares_alone() -> None:
    lost = [Share(0, 5, first_session=5), Share(1, 2, rate_fraction=0.25)]
    assert split_takeover(lost, [1, 1]) == [
        [Share(1, 1, rate_fraction=0.125)],
        [Share(1, 1, rate_fraction=0.125)],
    ]
    assert split_takeover([Share(0, 5)], [1, 1]) == [[], []]


def test_demands_read_the_load_test() -> None:
    lt = minimal_load_test("http://127.0.0.1:8080", concurrency=5, duration="1s")
    entry = dict(lt["scenarios"][0])
    lt["scenarios"] = [
        entry,
        {**entry, "concurrency": 0, "arrival_rate": {"per_second": 100, "max_sessions": 10}},
    ]
    assert demands(load_test_from_dict(lt)) == [Demand(5), Demand(10, open_model=True)]


def test_wire_form() -> None:
    closed = to_entry_share(Share(2, 4, first_session=3))
    assert (closed.entry_index, closed.sessions, closed.first_session) == (2, 4, 3)
    assert closed.rate_fraction == 0
    opened = to_entry_share(Share(1, 4, rate_fraction=0.25))
    assert (opened.sessions, opened.first_session, opened.rate_fraction) == (4, 0, 0.25)


# -- properties --------------------------------------------------------------------------------

capacities = st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=12)
demand_lists = st.lists(
    st.builds(Demand, st.integers(min_value=0, max_value=10_000), st.booleans()),
    min_size=1,
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=1_000_000), capacities)
def test_split_sessions_conserves_and_follows_capacity(total: int, caps: list[int]) -> None:
    parts = split_sessions(total, caps)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    weights = [max(1, c) for c in caps]
    for part, weight in zip(parts, weights, strict=True):
        # Largest remainder: each part is its exact quota rounded down or up.
        assert abs(part - total * weight / sum(weights)) < 1


@settings(max_examples=100, deadline=None)
@given(demand_lists, capacities)
def test_split_conserves_sessions_and_rate(wanted: list[Demand], caps: list[int]) -> None:
    per_worker = split(wanted, caps)
    assert len(per_worker) == len(caps)
    for index, demand in enumerate(wanted):
        shares = [s for shares in per_worker for s in shares if s.entry_index == index]
        assert all(s.sessions > 0 for s in shares)
        assert all(len([s for s in w if s.entry_index == index]) <= 1 for w in per_worker)
        assert sum(s.sessions for s in shares) == demand.sessions
        assert all(s.sessions <= demand.sessions for s in shares)
        if demand.open_model and demand.sessions:
            assert all(s.open_model for s in shares)
            assert math.isclose(sum(s.rate_fraction for s in shares), 1.0, rel_tol=1e-9)
        else:
            assert not any(s.open_model for s in shares)
            # Closed sessions tile 0..n-1 exactly.
            ranges = sorted((s.first_session, s.first_session + s.sessions) for s in shares)
            ends = [0] + [end for _, end in ranges]
            assert [start for start, _ in ranges] == ends[:-1]
            assert ends[-1] == demand.sessions


@settings(max_examples=100, deadline=None)
@given(demand_lists, capacities, capacities)
def test_takeover_conserves_the_lost_share(
    wanted: list[Demand], caps: list[int], survivors: list[int]
) -> None:
    for lost in split(wanted, caps):
        moved = split_takeover(lost, survivors)
        assert len(moved) == len(survivors)
        for share in lost:
            parts = [s for given in moved for s in given if s.entry_index == share.entry_index]
            if not share.open_model:
                assert parts == []
                continue
            assert sum(p.sessions for p in parts) == share.sessions
            assert all(0 < p.sessions <= share.sessions for p in parts)
            assert math.isclose(
                sum(p.rate_fraction for p in parts), share.rate_fraction, rel_tol=1e-9
            )
