"""Blast radius (issue 7, principle 1) on the real fleet of ``hostile_fleet``: one
oversized or broken object, or a forged configuration fragment, breaks only itself; the
openai client shows every other tenant still served."""

from __future__ import annotations

import json
import time

import pytest

from slmfleet.api.fragments import FRAGMENT_KEY, FRAGMENT_LABEL
from tests.fixtures.cluster import wait_for
from tests.fixtures.hostile import policy, specialist

pytestmark = pytest.mark.integration


def test_one_oversized_or_broken_object_breaks_only_itself(hostile_fleet):
    """Class: blast radius. Oversized examples, an oversized policy and forged
    fragments are each left out with a reason; everyone else keeps being served."""
    fleet = hostile_fleet
    a, b = fleet.team_a, fleet.team_b
    lines = "\n".join(f"example question number {i} " + "x" * 60 for i in range(4000))
    create(fleet, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
                   "data": {"lines": lines}}, a)  # fmt: skip
    examples_from = {"examplesFrom": {"name": "huge", "key": "lines"}}
    fleet.add_specialist(a, specialist("extractor", ["extract"], domain=examples_from))
    huge = [f"off topic {i} " + "y" * 990 for i in range(900)]
    # ~900 KB: admitted (under the API server's limits), too large for one fragment.
    create(fleet, policy("huge", fleet.model("huge"), ["generalist"],
                         routing={"semantic": {"outOfDomainExamples": huge}}), b)  # fmt: skip
    try:
        cond = fleet.wait_condition("slm", "extractor", a, "ExamplesTooLarge", 90)
        assert "examplesFrom" in cond["message"]
        cond = fleet.wait_condition("rp", "huge", b, "RouterConfigTooLarge")
        assert fleet.model("huge") not in fleet.models()
        assert f"{a}/extractor" not in fleet.models()
        fleet.still_serving()
        _forged_fragments_are_refused_alone(fleet)
    finally:
        fleet.kube("delete", "slm", "extractor", "-n", a)
        fleet.kube("delete", "rp", "huge", "-n", b)
        fleet.kube("delete", "configmap", "huge", "-n", a)


def create(fleet, body: dict, namespace: str) -> None:
    """kubectl create: a client-side apply would copy a large object into an annotation."""
    fleet.kube("create", "-n", namespace, "-f", "-", input=json.dumps(body))


def _forged_fragments_are_refused_alone(fleet) -> None:
    """Fragments the operator did not write (or an older one did): a non-RE2 rule and a
    policy reaching into another namespace. The router refuses each alone; the operator
    deletes them as stale; a fragment edited by hand is put back."""
    ns, cm = fleet.release, fleet.config_cm
    forged = {
        "regex": {"kind": "policy", "id": f"{fleet.team_b}/forged", "policy": {
            "modelName": fleet.model("forged"), "id": f"{fleet.team_b}/forged",
            "specialists": [f"{fleet.team_b}/generalist"],
            "routing": {"rules": [{"name": "r", "regex": "(?=x)", "specialist":
                                   f"{fleet.team_b}/generalist"}]},
            "cascade": [{"name": "routed", "routed": True}]}},
        "cross": {"kind": "policy", "id": f"{fleet.team_b}/cross", "policy": {
            "modelName": fleet.model("cross"), "id": f"{fleet.team_b}/cross",
            "specialists": [f"{fleet.team_a}/domain-billing"],
            "cascade": [{"name": "routed", "routed": True}]}},
    }  # fmt: skip
    for name, frag in forged.items():
        fleet.kube.apply(
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{cm}-forged-{name}", "labels": {FRAGMENT_LABEL: cm}},
             "data": {FRAGMENT_KEY: json.dumps(frag)}},
            ns,
        )  # fmt: skip
    for _ in range(5):
        fleet.still_serving()
        assert fleet.model("forged") not in fleet.models()
        assert fleet.model("cross") not in fleet.models()
        time.sleep(0.2)
    for name in forged:  # the operator deletes fragments no object needs
        wait_for(lambda n=name: not fleet.kube.get("configmap", f"{cm}-forged-{n}", ns), 60)
    log = fleet.log()
    assert f"{cm}-forged-regex left out: invalid" in log, log[-3000:]
    assert f"{cm}-forged-cross left out: references" in log, log[-3000:]
    # An edited fragment comes back as the operator rendered it.
    live = fleet.kube.items("configmaps", ns, f"{FRAGMENT_LABEL}={cm}")
    victim = next(c for c in live if "policy" in c["metadata"]["labels"].get(
        "slmfleet.io/fragment-kind", ""))  # fmt: skip
    original = victim["data"][FRAGMENT_KEY]
    fleet.kube("patch", "configmap", victim["metadata"]["name"], "-n", ns, "--type=merge",
               "-p", json.dumps({"data": {FRAGMENT_KEY: "{broken"}}))  # fmt: skip
    wait_for(
        lambda: (
            fleet.kube.get("configmap", victim["metadata"]["name"], ns)["data"][FRAGMENT_KEY]
            == original
        ),
        60,
        "fragment restored",
    )
    fleet.still_serving()
