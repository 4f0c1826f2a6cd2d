"""Choosing a replica per request: least outstanding, ties in turn, skipping the
ineligible and the excluded."""

from __future__ import annotations

import pytest

from slmfleet.router.triton.balance import Load, pick, shares, within_fair_share


def L(*outstanding, off=()):
    return [Load(n, i not in off) for i, n in enumerate(outstanding)]


@pytest.mark.parametrize(
    ("loads", "cursor", "exclude", "expected"),
    [
        (L(), 0, (), None),
        (L(0), 0, (), 0),
        (L(3, 1, 2), 0, (), 1),  # least outstanding
        (L(1, 1, 1), 0, (), 0),  # ties: the first from the cursor
        (L(1, 1, 1), 2, (), 2),
        (L(1, 1, 1), 4, (), 1),  # cursor wraps
        (L(0, 5, 0), 1, (), 2),
        (L(5, 5, 0), 0, (), 2),  # a new replica (0 in flight) wins at once
        (L(0, 1, 2, off={0}), 0, (), 1),  # circuit open or draining: skipped
        (L(0, 1, 2), 0, {0, 1}, 2),  # excluded for this request (a retry)
        (L(0, 1, off={0, 1}), 0, (), None),
    ],
)
def test_pick(loads, cursor, exclude, expected):
    assert pick(loads, cursor, exclude) == expected


def test_rotation_spreads_equal_replicas_evenly():
    counts = [0, 0, 0, 0]
    cursor = 0
    for _ in range(400):  # one request at a time: every pick is a tie at 0
        i = pick(L(0, 0, 0, 0), cursor)
        counts[i] += 1
        cursor = i + 1
    assert counts == [100, 100, 100, 100]


def test_fair_share():
    assert shares([1, 3]) == [0.25, 0.75]
    assert within_fair_share([100, 110, 95, 105], 0.2)
    assert not within_fair_share([100, 100, 100, 0], 0.2)
    assert not within_fair_share([], 0.2)
