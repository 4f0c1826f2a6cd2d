"""One tenant's poison object never fails an operator loop for the others, on the real
API server with the operator's own supervised loops (kopf's runner, in this process).

Each object below is one the CRDs admit and that used to fail a whole loop every tick,
so that after five failures the supervisor turned liveness red and Kubernetes restarted
the operator for every tenant: a price past float range (autoscaler), a pool memory past
2^63 bytes (pool loop), a policy naming 1,000 absent specialists whose status message
passed the CRD's 32,768 characters (fleet loop: no later policy's status was written).
"""

from __future__ import annotations

import time
import uuid

import pytest
from kopf.testing import KopfRunner

from slmfleet.local.cluster import free_port
from tests.fixtures.cluster import specialist_manifest, wait_for
from tests.integration.test_supervised_operator import health

pytestmark = pytest.mark.integration

HUGE = "99999999999999999999Gi"  # 22 characters: the CRD admits it, 2^63 bytes do not


def cond(body: dict | None, type_: str) -> dict:
    return next(
        (c for c in ((body or {}).get("status") or {}).get("conditions", []) if c["type"] == type_),
        {},
    )


def pool(name: str, memory: str) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMPool",
        "metadata": {"name": name},
        "spec": {"resources": {"cpu": "100m", "memory": memory}},
    }


def member(name: str, pool_name: str) -> dict:
    body = specialist_manifest(name, gpu=0)
    body["spec"]["serving"]["pool"] = pool_name
    del body["spec"]["serving"]["replicas"]
    return body


def policy(name: str, names: list[str]) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": name},
        "spec": {"modelName": name, "specialists": {"names": names}},
    }


def test_poison_objects_are_reported_on_their_own_status_and_the_rest_reconciles(
    cluster, kube, namespace, monkeypatch
):
    ns = namespace
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig)
    )
    monkeypatch.setenv("SLMFLEET_ROUTER_CONFIGMAP", f"slmfleet-system/cfg-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("SLMFLEET_AUTOSCALER", "on")
    monkeypatch.setenv("SLMFLEET_AUTOSCALER_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("SLMFLEET_POOL_INTERVAL_SECONDS", "1")

    cheap = specialist_manifest("cheap", gpu=0)
    cheap["spec"]["cost"] = {"replicaHourUsd": 1e-305}
    cheap["spec"]["serving"]["autoscaling"] = {"maxCostUsdPerHour": 1e6}
    absent = [f"absent-{i:04d}-" + "x" * 40 for i in range(1000)]  # 52 characters each
    for body in (
        cheap,
        specialist_manifest("fine", gpu=0),
        pool("huge", HUGE),
        member("in-huge", "huge"),
        pool("ok", "1Gi"),
        member("in-ok", "ok"),
        policy("wide", absent),
        policy("good", ["fine"]),
    ):
        kube.apply(body, ns)

    port = free_port()
    args = ["run", "-m", "slmfleet.controller", "--standalone", "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz"]  # fmt: skip
    with KopfRunner(args, timeout=90) as runner:
        wait_for(lambda: health(port)[0] == 200, 30, "live")
        # The fleet loop: the wide policy's message is cut, and the next policy's
        # status is written all the same.
        wide = wait_for(lambda: cond(kube.get("rp", "wide", ns), "Ready"), 60, "wide status")
        assert wide["reason"] == "TargetsNotFound"
        assert len(wide["message"]) <= 4096 and "more characters)" in wide["message"]
        good = wait_for(lambda: cond(kube.get("rp", "good", ns), "Ready"), 60, "good status")
        assert good["reason"] != "TargetsNotFound"
        # The pool loop: the huge pool says why on its own status; the other is placed.
        huge = wait_for(lambda: cond(kube.get("slmpool", "huge", ns), "Stalled"), 60, "huge")
        assert (huge["status"], huge["reason"]) == ("True", "PoolError")
        assert "spec.resources.memory" in huge["message"]
        fits = wait_for(lambda: cond(kube.get("slmpool", "ok", ns), "Fits"), 60, "ok fits")
        assert (fits["status"], fits["reason"]) == ("True", "Fits")
        # The autoscaler decides for the cheap specialist like for any other.
        for name in ("cheap", "fine"):
            scaling = wait_for(lambda n=name: cond(kube.get("slm", n, ns), "Scaling"), 60, name)
            assert scaling["reason"] != "ScalerError", scaling
        # Several more rounds of every loop: none failed, liveness stays green.
        time.sleep(8)
        code, report = wait_for(lambda: (s := health(port))[0] and s, 30, "health")
        assert code == 200, report
        failed = {n: r for n, r in report["loops"].items() if r["restarts"] or r["failures"]}
        assert failed == {}, failed
    assert runner.exception is None or isinstance(runner.exception, SystemExit)


async def test_a_status_the_api_server_refuses_skips_that_object_only(
    cluster, kube, namespace, monkeypatch
):
    """A status write refused with 422 (here a message past the CRD's bound, written
    around the cap) is logged and the next object's status is still written."""
    from slmfleet.clients.kube import KubeClient
    from slmfleet.controller.fleet import write_statuses
    from slmfleet.controller.runtime import OperatorConfig, Runtime

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    for name in ("refused", "written"):
        kube.apply(policy(name, ["fine"]), namespace)
    rt = Runtime(OperatorConfig.from_environment(), KubeClient.from_environment())
    try:
        for name in ("refused", "written"):
            rt.store.policies[(namespace, name)] = kube.get("rp", name, namespace)

        def status(message: str) -> dict:
            return {"conditions": [{"type": "Ready", "status": "False", "reason": "Test",
                                    "message": message, "observedGeneration": 1}]}  # fmt: skip

        await write_statuses(rt, "RouterPolicy", {
            f"{namespace}/refused": status("x" * 40_000),
            f"{namespace}/written": status("fine"),
        })  # fmt: skip
        # What the API server answered to each write (the operator's store keeps it):
        # read back from the cluster, the session's operator may since have written
        # these policies' real statuses.
        written = cond(rt.store.policies[(namespace, "written")], "Ready")
        assert (written.get("reason"), written.get("message")) == ("Test", "fine")
        assert cond(rt.store.policies[(namespace, "refused")], "Ready").get("reason") != "Test"
    finally:
        await rt.kube.close()
