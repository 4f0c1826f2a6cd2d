"""Issue 10 end to end on real parts: the real operator (its built-in autoscaler loop on)
against the real API server, the real router serving what the operator renders (its
ConfigMap fragments) and balancing over the Pods the EndpointSlices list, the real Triton
server, load from the official openai client.

kwok Pods do not serve: the router's discovery maps every Pod address the EndpointSlices
give to the one local Triton server (``map_address``, the only stand-in here), so a Pod
that kwok reports Ready answers through real Triton. More replicas therefore add no
capacity: the tests watch decisions and their effects (the scale subresource, the
Deployment, status, Events, what the router does), not a latency that more Pods would
lower. Triton's own metrics are not scraped here (``SLMFLEET_TRITON_METRICS=off``: a
kwok Pod's address has no metrics port); the router's metrics are.

The shared ``operator`` fixture runs with its autoscaler off; it may reconcile these
specialists too (it watches every namespace), which renders the same children.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import openai
import pytest

from slmfleet.local.models import StandIn
from slmfleet.local.operator import OperatorProcess
from slmfleet.router import metrics as m
from slmfleet.router.source import ConfigMapSource
from slmfleet.router.triton.discovery import EndpointSlices, kubeconfig_access
from tests.fixtures.cluster import specialist_manifest, wait_for

from .router_support import RouterThread

pytestmark = pytest.mark.integration

ORDER = "order id AB-12345 please"


class Fleet:
    """One namespace with the operator (autoscaler on) and the router watching it."""

    def __init__(self, kube, namespace, router: RouterThread, operator: OperatorProcess):
        self.kube, self.ns, self.router, self.operator = kube, namespace, router, operator
        self.client = openai.OpenAI(base_url=router.url + "/v1", api_key="-", max_retries=0)

    def apply_specialist(self, name: str, *, replicas=None, **serving) -> None:
        body = specialist_manifest(name, gpu=0)
        body["spec"]["serving"]["replicas"] = serving.pop("bounds", {"min": 1, "max": 4})
        body["spec"]["serving"]["autoscaling"] = {"windowSeconds": 5, **serving}
        body["spec"]["slo"] = {"latencyP95Ms": 60000, "targetInFlight": 2}
        if replicas is not None:
            body["spec"]["replicas"] = replicas
        self.kube.apply(body, self.ns)

    def apply_policy(self, name: str, cascade: list[dict], **capacity) -> str:
        model = f"{name}-{self.ns}"
        first = next(t["specialist"] for t in cascade if "specialist" in t)
        tiers = [{"name": "small", "routed": True}] if cascade[0].get("routed") else []
        tiers += [t for t in cascade if not t.get("routed")]
        self.kube.apply(
            {
                "apiVersion": "slmfleet.io/v1alpha1",
                "kind": "RouterPolicy",
                "metadata": {"name": name},
                "spec": {
                    "modelName": model,
                    "specialists": {"names": [first]},
                    "routing": {"semantic": {"enabled": False}},
                    "cascade": tiers,
                    "capacity": capacity,
                },
            },
            self.ns,
        )
        return model

    def served(self, name: str, what: str = "ready"):
        """The router's view of a specialist: ready / scaled_to_zero."""

        def check():
            snap = self.router.app.snapshot
            spec = snap and snap.specialists.get(f"{self.ns}/{name}")
            return spec if spec is not None and getattr(spec, what) else None

        return wait_for(check, 90, f"router: {name} {what}")

    def slm(self, name: str) -> dict:
        return self.kube.get("slm", name, self.ns)

    def condition(self, name: str, type_: str) -> dict:
        conds = (self.slm(name).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == type_), {})

    def events(self, name: str) -> list[dict]:
        return [e for e in self.kube.items("events", self.ns)
                if e["involvedObject"]["name"] == name
                and e["source"].get("component") == "slmfleet-autoscaler"]  # fmt: skip


@pytest.fixture(scope="module")
def triton_models():
    return {
        "burst": StandIn("extractor", {"token_delay_ms": "20"}),  # one instance: it queues
        "capped": StandIn("extractor", {"token_delay_ms": "20"}),
        "wake": StandIn("extractor"),
        "nap": StandIn("extractor"),
        "big": StandIn("generalist"),
    }


@pytest.fixture(scope="module")
def fleet(cluster, kube, tmp_path_factory, triton_models) -> Iterator[Fleet]:
    from slmfleet.local import TritonServer, write_model_repository

    work = tmp_path_factory.mktemp("autoscale-e2e")
    triton = TritonServer(write_model_repository(work / "models", triton_models),
                          log_path=work / "triton.log", startup_timeout=180)  # fmt: skip
    ns = f"t-{uuid.uuid4().hex[:8]}"
    kube("create", "namespace", ns)
    config = f"autoscale-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp, triton:
        mp.setenv("KUBECONFIG", str(cluster.kubeconfig))
        mp.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                   str(cluster.kubeconfig))  # fmt: skip
        # Every Pod the EndpointSlices list "is" the local Triton server (kwok Pods serve
        # nothing); the port of the slice is gRPC's, as the Service names it.
        discovery = EndpointSlices(
            kubeconfig_access(str(cluster.kubeconfig)), map_address=lambda _a: triton.grpc_url
        )
        source = ConfigMapSource("slmfleet-system", config)
        with RouterThread(None, source=source, discovery=discovery) as router:
            operator = OperatorProcess(
                cluster.kubeconfig,
                router_configmap=f"slmfleet-system/{config}",
                log_path=work / "operator.log",
                namespaces=(ns,),
                extra_env={
                    "SLMFLEET_AUTOSCALER": "on",
                    "SLMFLEET_ROUTER_METRICS_URLS": f"{router.url}/metrics",
                    "SLMFLEET_TRITON_METRICS": "off",
                },
            )
            operator.start()
            try:
                yield Fleet(kube, ns, router, operator)
            finally:
                operator.stop()
    kube("delete", "namespace", ns, "--wait=false", check=False)


async def hammer(url: str, model: str, concurrency: int, stop: asyncio.Event) -> int:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not stop.is_set():
            await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": ORDER}]
            )
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return done


async def test_load_at_the_router_scales_the_specialist_and_its_deployment(fleet):
    f = fleet
    f.apply_specialist("burst")
    model = f.apply_policy("burst", [{"routed": True, "specialist": "burst"}])
    f.served("burst")
    stop = asyncio.Event()
    load = asyncio.create_task(hammer(f.router.url, model, 8, stop))
    try:
        scaled = await asyncio.to_thread(
            wait_for, lambda: (f.slm("burst")["spec"]["replicas"] > 1) and f.slm("burst"), 60,
            "the operator's autoscaler to scale up",
        )  # fmt: skip
    finally:
        stop.set()
        served = await load
    assert served > 0
    replicas = scaled["spec"]["replicas"]
    # Eight in flight against two per replica: up, by the rule that says so.
    assert 2 <= replicas <= 4
    cond = f.condition("burst", "Scaling")
    assert cond["status"] == "True"
    assert cond["reason"] in ("InFlightAboveTarget", "LatencyAboveSLO", "MaxReplicasReached")
    status = f.slm("burst")["status"]
    assert status["desiredReplicas"] >= 2 and status["lastScaleTime"]
    assert status["observed"]["inFlight"] > 2
    # The operator's Deployment follows the scale subresource; kubectl sees it.
    wait_for(lambda: f.kube.get("deployment", "slm-burst", f.ns)["spec"]["replicas"] >= replicas,
             30, "the Deployment to follow")  # fmt: skip
    events = f.events("burst")
    assert any(e["message"].startswith("scaled from 1 to ") for e in events), events
    # A scale-up keeps the specialist Ready for routing: the running replica serves on.
    assert f.condition("burst", "Ready")["status"] == "True"


def test_a_request_for_a_specialist_at_zero_waits_is_served_then_it_scales_to_zero(fleet):
    f = fleet
    f.apply_specialist("wake", replicas=0, bounds={"min": 0, "max": 2},
                       scaleToZeroAfterSeconds=30)  # fmt: skip
    model = f.apply_policy("wake", [{"routed": True, "specialist": "wake"}],
                           whenScaledToZero="wait", maxWaitSeconds=90)  # fmt: skip
    # At zero: not Ready (nothing serves), at rest, and routable (the router holds).
    wait_for(lambda: f.condition("wake", "Ready").get("reason") == "ScaledToZero", 60, "zero")
    ready = f.condition("wake", "Ready")
    assert ready["status"] == "False"
    assert f.condition("wake", "Reconciling")["status"] == "False"
    f.served("wake", "scaled_to_zero")

    def policy_ready():
        conds = (f.kube.get("rp", "wake", f.ns).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for(policy_ready, 30, "the policy Ready: a target at zero is served on demand")
    policy = f.kube.get("rp", "wake", f.ns)
    assert policy["status"]["resolvedTargets"][0].get("scaledToZero") is True

    waiting = m.bound(m.WAITING, f"{f.ns}/wake")
    t0 = time.monotonic()
    seen = []

    def ask():
        return f.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": ORDER}]
        )

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", ask()))
    thread.start()
    while thread.is_alive() and time.monotonic() - t0 < 120:
        seen.append(waiting._value.get())
        time.sleep(0.2)
    thread.join(timeout=1)
    elapsed = time.monotonic() - t0
    assert "r" in result, "the held request was not served"
    assert "AB-12345" in result["r"].choices[0].message.content
    assert max(seen) == 1  # held at the router: the demand the autoscaler saw
    body = f.slm("wake")
    assert body["spec"]["replicas"] == 1
    events = f.events("wake")
    assert any(e["reason"] == "ScaleFromZero" and e["message"].startswith("scaled from 0 to 1")
               for e in events), events  # fmt: skip
    print(f"zero -> served through the operator and a kwok Pod: {elapsed:.1f}s")
    wait_for(lambda: f.condition("wake", "Ready").get("status") == "True", 60, "Ready again")

    # Idle for scaleToZeroAfterSeconds: back to zero, and the router is told.
    wait_for(lambda: f.slm("wake")["spec"]["replicas"] == 0, 120, "scale to zero when idle")
    wait_for(lambda: f.kube.get("deployment", "slm-wake", f.ns)["spec"]["replicas"] == 0, 30)
    wait_for(lambda: f.condition("wake", "Ready").get("reason") == "ScaledToZero", 60)
    f.served("wake", "scaled_to_zero")
    assert any(e["reason"] == "ScaledToZero" for e in f.events("wake"))


def test_cascade_policy_answers_from_the_next_tier_and_still_wakes_the_specialist(fleet):
    f = fleet
    f.apply_specialist("nap", replicas=0, bounds={"min": 0, "max": 2})
    f.apply_specialist("big", bounds={"min": 1, "max": 1})
    model = f.apply_policy(
        "nap",
        [{"routed": True, "specialist": "nap"}, {"name": "large", "specialist": "big"}],
        whenScaledToZero="cascade",
    )
    f.served("nap", "scaled_to_zero")
    f.served("big")
    t0 = time.monotonic()
    raw = f.client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": ORDER}]
    )
    assert time.monotonic() - t0 < 5.0  # at once: nothing waited for a replica
    assert raw.headers["x-slmfleet-tier"] == "large"
    assert raw.headers["x-slmfleet-escalations"] == "small:scaled_to_zero"
    assert raw.parse().choices[0].message.content
    # The request that went elsewhere is demand all the same: the specialist starts.
    wait_for(lambda: f.slm("nap")["spec"]["replicas"] >= 1, 60, "the cascaded demand to wake it")
    events = f.events("nap")
    assert any(e["reason"] in ("ScaleFromZero", "MaxReplicasReached")
               and e["message"].startswith("scaled from 0 to") for e in events), events  # fmt: skip


async def test_at_the_cost_cap_the_overflow_goes_to_the_next_tier_where_the_policy_allows(fleet):
    """The cap pays for one replica: the autoscaler says CostCapped, the operator tells
    the router, and requests beyond targetInFlight per replica go to the next tier."""
    f = fleet
    body = specialist_manifest("capped", gpu=0)
    body["spec"]["serving"]["replicas"] = {"min": 1, "max": 4}
    body["spec"]["serving"]["autoscaling"] = {"windowSeconds": 5, "maxCostUsdPerHour": 1.0}
    body["spec"]["cost"] = {"replicaHourUsd": 1.0}
    body["spec"]["slo"] = {"latencyP95Ms": 60000, "targetInFlight": 2}
    f.kube.apply(body, f.ns)
    f.apply_specialist("big", bounds={"min": 1, "max": 1})
    model = f.apply_policy(
        "capped",
        [{"routed": True, "specialist": "capped"}, {"name": "large", "specialist": "big"}],
        whenCostCapped="cascade",
    )
    f.served("capped")
    f.served("big")
    tiers: list[str] = []
    client = openai.AsyncOpenAI(base_url=f.router.url + "/v1", api_key="-", max_retries=0)
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": ORDER}]
            )
            tiers.append(raw.headers["x-slmfleet-tier"])

    load = asyncio.gather(*(worker() for _ in range(8)))
    try:
        await asyncio.to_thread(
            wait_for, lambda: f.condition("capped", "Scaling").get("reason") == "CostCapped", 60,
            "the cap to bind",
        )  # fmt: skip
        await asyncio.to_thread(f.served, "capped", "cost_capped")
        mark = len(tiers)
        await asyncio.to_thread(wait_for, lambda: len(tiers) > mark + 40, 60, "more answers")
    finally:
        stop.set()
        await load
        await client.close()
    assert f.slm("capped")["spec"]["replicas"] == 1  # what the cap pays for
    after = tiers[mark:]
    # Eight clients, one replica taking two at a time: the overflow went to "large".
    assert after.count("large") > 0 and after.count("small") > 0, after
    assert "cost cap 1 USD/h pays for 1" in f.condition("capped", "Scaling")["message"]
