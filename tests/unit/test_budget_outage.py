"""The shared ledger's outage state, pure: down from the first failure to the first
answer, one probe at a time, and the baseline a fail-open replica starts from."""

from __future__ import annotations

import pytest

from slmfleet.api.budget import SpendWindow
from slmfleet.budget.amounts import Amount
from slmfleet.budget.ledger import BudgetLimits, WindowState, window_calls
from slmfleet.budget.outage import Availability, Orphan, Pending, outage_baseline


def test_down_from_the_first_failure_to_the_first_answer():
    t = [100.0]
    a = Availability(1.0, lambda: t[0])
    assert not a.down and not a.start_probe()  # up: nothing to probe
    assert a.failed("refused")  # up -> down: the caller warns and builds its baseline
    assert a.down and a.last_error == "refused"
    assert not a.start_probe()  # not due yet
    t[0] += 1.0
    assert a.start_probe()
    assert not a.start_probe()  # one in flight at a time, however many ask
    assert not a.failed("refused again")  # a failed probe: still down, no new baseline
    a.end_probe()
    assert not a.start_probe()  # the next probe waits a full interval again
    t[0] += 1.0
    assert a.start_probe()
    assert a.succeeded() and not a.down  # down -> up once
    a.end_probe()
    assert not a.succeeded()
    assert a.failed("again")  # a new outage is a new transition


@pytest.mark.parametrize(
    ("known", "batches", "orphan", "want"),
    [
        ({"1h": (0.5, 0.25)}, [], 0.0, 0.75),
        ({"1h": (0.5, 0.0)}, [0.1, 0.2], 0.0, 0.8),
        ({}, [0.1], 0.0, 0.1),
        ({"1h": (0.5, 0.3)}, [], 0.2, 1.0),  # the hold and its actual: errs high
    ],
)
def test_outage_baseline_adds_what_redis_has_not_seen(known, batches, orphan, want):
    win = SpendWindow(window="1h", limit_usd=5.0, action="reject")
    b = BudgetLimits("ns/b", (win,))
    states = {("ns/b", w): WindowState(Amount(s), Amount(r)) for w, (s, r) in known.items()}
    pending = [Pending(f"r{i}", "ns/b", win, 7 + i, Amount(x)) for i, x in enumerate(batches)]
    orphans = [Orphan("res", Amount(orphan), window_calls([b], 1.7e9))] if orphan else []
    base = outage_baseline(states, pending, orphans)
    assert base[("ns/b", "1h")].nano_usd == Amount(want).nano_usd
