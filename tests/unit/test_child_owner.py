"""Children are matched to their specialist by uid, not by name (pure lookup)."""

from __future__ import annotations

import pytest

from slmfleet.controller.runtime import SpecialistState
from slmfleet.controller.specialist import owner_key


def child(owner_name: str, owner_uid: str | None, kind: str = "SLMSpecialist") -> dict:
    ref = {"apiVersion": "slmfleet.io/v1alpha1", "kind": kind, "name": owner_name}
    if owner_uid is not None:
        ref["uid"] = owner_uid
    return {"metadata": {"namespace": "ns", "name": "c", "ownerReferences": [ref]}}


KNOWN = {("ns", "billing"): SpecialistState(body={"metadata": {"uid": "u-1"}})}


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (child("billing", "u-1"), ("ns", "billing")),  # ours
        (child("billing", "u-forged"), None),  # a look-alike naming our specialist
        (child("billing", None), None),  # no uid at all
        (child("unknown", "u-1"), None),  # a specialist we do not know (yet)
        (child("billing", "u-1", kind="SLMPool"), None),  # another owner kind
        ({"metadata": {"namespace": "ns", "name": "c"}}, None),  # no owner
        (
            {
                "metadata": {
                    "namespace": "other",
                    "name": "c",
                    "ownerReferences": [{"kind": "SLMSpecialist", "name": "billing", "uid": "u-1"}],
                }
            },
            None,
        ),
    ],
)
def test_owner_key_matches_by_uid(body, want):
    assert owner_key(body, KNOWN) == want


def test_a_specialist_without_a_body_owns_nothing():
    assert owner_key(child("billing", "u-1"), {("ns", "billing"): SpecialistState()}) is None
