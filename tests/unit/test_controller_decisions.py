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


async def test_a_base_made_due_during_its_reconcile_is_rendered_again(monkeypatch):
    """An adapter arrives while its base's children are being applied with the adapters
    known before it: the reconcile queued behind must still render (the lost update
    that left multi_lora.json without the newest adapter)."""
    import asyncio
    from types import SimpleNamespace

    from slmfleet.controller import runtime as R
    from slmfleet.controller import specialist as S

    key = ("ns", "base")
    state = R.SpecialistState(
        body={
            "metadata": {"name": "base", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "pvc://models/base", "backend": "vllm"}},
        }
    )
    rt = SimpleNamespace(store=SimpleNamespace(specialists={key: state}))
    monkeypatch.setattr(S, "runtime", lambda: rt)
    monkeypatch.setattr(S, "schedule_refresh", lambda *_a, **_k: None)
    first_started, release = asyncio.Event(), asyncio.Event()
    applied: list[int] = []

    async def apply_children(owner, spec, *, new=False):
        applied.append(state.dues)  # what this render saw
        if len(applied) == 1:
            first_started.set()
            await release.wait()
        return None

    monkeypatch.setattr(S, "apply_children", apply_children)
    first = asyncio.create_task(S.reconcile(key))
    await first_started.wait()
    state.make_due()  # touch_base: an adapter came while the first render ran
    second = asyncio.create_task(S.reconcile(key))
    release.set()
    await asyncio.gather(first, second)
    assert applied == [0, 1]  # rendered again, with what is current
    assert state.reconciled == 1
    await S.reconcile(key)  # and then done: no third render for the same generation
    assert applied == [0, 1]
