"""The controller's pure decisions: when to reconcile, which body to keep."""

import pytest

from slmfleet.controller.runtime import remember
from slmfleet.controller.specialist import needs_reconcile


def body(generation=1, rv="10", deleting=False, name="a"):
    meta = {"name": name, "namespace": "ns", "generation": generation, "resourceVersion": rv}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("obj", "reconciled", "expected"),
    [
        (body(generation=1), None, True),  # never seen: operator start or a new object
        (body(generation=1), 1, False),  # a status change: same generation, nothing to do
        (body(generation=2), 1, True),  # the spec changed
        (body(generation=2, deleting=True), 1, False),  # owner references do the rest
    ],
)
def test_needs_reconcile(obj, reconciled, expected):
    assert needs_reconcile(obj, reconciled) is expected


def test_remember_keeps_the_newest_version():
    table = {}
    assert remember(table, body(rv="10"))
    assert remember(table, body(rv="12"))
    assert not remember(table, body(rv="11"))  # a late watch event after our own write
    assert table[("ns", "a")]["metadata"]["resourceVersion"] == "12"
    assert remember(table, body(rv="12"))  # the same version again is harmless


def test_remember_under_another_key():
    table = {}
    assert remember(table, body(rv="5", name="slm-a"), ("ns", "a"))
    assert ("ns", "a") in table and ("ns", "slm-a") not in table
