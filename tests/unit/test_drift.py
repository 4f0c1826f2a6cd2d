"""No write when nothing changed; a write when we changed or someone else did."""

import pytest

from slmfleet.render.drift import contains, needs_apply, stamp
from slmfleet.render.labels import APPLIED_HASH_ANNOTATION


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        ({"a": 1, "extra": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": "1"}, {"a": 1}, True),  # quantities come back as strings
        ({"a": [{"x": 1, "d": 0}]}, {"a": [{"x": 1}]}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": True}, {"a": "True"}, False),
        ({}, {"a": None}, False),
        ({"a": {"b": {"c": 1}}}, {"a": {"b": {}}}, True),
    ],
)
def test_contains(live, desired, expected):
    assert contains(live, desired) is expected


def obj(**data):
    return {"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}, "data": data}


def test_needs_apply():
    desired = stamp(obj(a="1"))
    assert needs_apply(desired, None)
    live = {**desired, "metadata": {**desired["metadata"], "resourceVersion": "7", "uid": "u"}}
    assert not needs_apply(desired, live)
    # Someone edited a field we own: drift is repaired.
    assert needs_apply(desired, {**live, "data": {"a": "2"}})
    # We stopped declaring a field: the hash differs, so SSA removes it.
    assert needs_apply(stamp(obj()), live)


def test_stamp_is_stable_and_content_addressed():
    assert stamp(obj(a="1")) == stamp(obj(a="1"))
    h1 = stamp(obj(a="1"))["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    h2 = stamp(obj(a="2"))["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    assert h1 != h2
