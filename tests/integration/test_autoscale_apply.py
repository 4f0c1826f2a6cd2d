"""The built-in autoscaler's loop on real parts: the real API server with the real operator
(whose Deployment follows the scale subresource), the real router in front of a real
Triton server whose one model instance queues under load, and load from the official
openai client. kwok Pods do not serve, so the serving capacity stays that of the local
Triton: the test watches the decision and its effects in the API server, not a latency
that more replicas would lower."""

from __future__ import annotations

import asyncio
import contextlib
import json

import openai
import pytest

from slmfleet.autoscale.apply import Autoscaler, AutoscalerConfig
from slmfleet.autoscale.scrape import ScrapeTargets
from slmfleet.clients.kube import KubeClient
from slmfleet.local import StandIn
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port
from tests.fixtures.cluster import specialist_manifest, wait_for

pytestmark = pytest.mark.integration

MODEL = "slow"  # one Triton instance, 20 ms per token: it queues under concurrency


@pytest.fixture
def slow_triton(start_triton):
    return start_triton({MODEL: StandIn("extractor", {"token_delay_ms": "20"})})


@pytest.fixture
def kube_client(cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    return KubeClient.from_environment()


def manifest(name: str, **autoscaling) -> dict:
    body = specialist_manifest(name, gpu=0, replicas=1)
    body["spec"]["serving"]["replicas"] = {"min": 1, "max": 4}
    body["spec"]["serving"]["autoscaling"] = {
        "windowSeconds": 5,
        "scaleDownStabilizationSeconds": 600,
        **autoscaling,
    }
    body["spec"]["slo"] = {"latencyP95Ms": 60000, "targetInFlight": 2}
    return body


@pytest.fixture
def router(slow_triton, namespace, tmp_path):
    config = {
        "version": 1,
        "specialists": [
            {
                "id": f"{namespace}/{MODEL}",
                "endpoint": slow_triton.grpc_url,
                "tritonModel": MODEL,
                "backend": "python",
                "ready": True,
            }
        ],
        "policies": [
            {
                "modelName": "scaled",
                "id": f"{namespace}/scaled",
                "specialists": [f"{namespace}/{MODEL}"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
    }
    (tmp_path / "router.json").write_text(json.dumps(config))
    proc = RouterProcess(
        ["--config", str(tmp_path / "router.json")], port=free_port(), log_path=tmp_path / "log"
    )
    proc.start()
    yield proc
    proc.stop()


class Harness:
    """The autoscaler as the supervisor would run it, with bodies listed before each tick."""

    def __init__(self, kube: KubeClient, namespace: str, targets: ScrapeTargets | None) -> None:
        self.kube, self.namespace, self.bodies = kube, namespace, []

        async def scrape_targets() -> ScrapeTargets:
            if targets is None:
                raise OSError("EndpointSlices unreadable")
            return targets

        self.scaler = Autoscaler(
            kube,
            specialists=lambda: self.bodies,
            targets=scrape_targets,
            config=AutoscalerConfig(interval_s=1.0, status_refresh_s=3600),
        )

    async def tick(self):
        self.bodies = await self.kube.list("SLMSpecialist", self.namespace)
        return await self.scaler.tick()

    async def until(self, predicate, timeout: float = 60.0, what: str = "condition"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        outcomes = []
        while loop.time() < deadline:
            outcomes = await self.tick()
            if predicate(outcomes):
                return outcomes
            await asyncio.sleep(1.0)
        raise AssertionError(f"timed out waiting for {what}; last {outcomes}")

    async def close(self) -> None:
        await self.scaler.collector.close()
        await self.kube.close()


async def hammer(url: str, concurrency: int, stop: asyncio.Event) -> int:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not stop.is_set():
            await client.chat.completions.create(
                model="scaled", messages=[{"role": "user", "content": "order id AB-12345 now"}]
            )
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return done


def scaling(body: dict) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == "Scaling")


async def test_load_scales_the_specialist_and_the_deployment_follows(
    kube, operator, namespace, router, slow_triton, kube_client
):
    ns = namespace
    kube.apply(manifest(MODEL), ns)
    wait_for(lambda: (kube.get("deployment", f"slm-{MODEL}", ns) or {}).get("status", {})
             .get("readyReplicas") == 1, what="one ready replica")  # fmt: skip
    targets = ScrapeTargets(
        router=[router.url + "/metrics"], triton={f"{ns}/{MODEL}": [slow_triton.metrics_url]}
    )
    h = Harness(kube_client, ns, targets)
    stop = asyncio.Event()
    load = None
    try:
        # Idle: within target, and no scale write.
        await h.until(lambda o: o and o[0].reason == "WithinTarget", what="a first decision")
        assert kube.get("slm", MODEL, ns)["spec"]["replicas"] == 1  # the default, unwritten

        # Eight concurrent requests against a target of two per replica: up to four.
        load = asyncio.create_task(hammer(router.url, 8, stop))
        out = await h.until(lambda o: o and o[0].scaled, what="a scale-up")
        assert out[0].reason == "InFlightAboveTarget" and out[0].replicas > 1
        stop.set()
        served = await load
        assert served > 0

        body = kube.get("slm", MODEL, ns)
        assert body["spec"]["replicas"] == out[0].replicas
        assert body["status"]["desiredReplicas"] == out[0].replicas
        assert body["status"]["lastScaleTime"]
        assert body["status"]["observed"]["inFlight"] > 2
        assert body["status"]["observed"]["throughputRps"] > 0
        # The operator's Deployment follows the scale subresource, and kubectl agrees.
        wait_for(lambda: kube.get("deployment", f"slm-{MODEL}", ns)["spec"]["replicas"]
                 == out[0].replicas, what="the Deployment to follow")  # fmt: skip
        scale = json.loads(kube("get", "--subresource=scale", f"slm/{MODEL}", "-n", ns,
                                "-o", "json"))  # fmt: skip
        assert scale["spec"]["replicas"] == out[0].replicas
        assert scale["status"]["selector"] == f"slmfleet.io/specialist={MODEL}"

        # One Event per change, saying from what to what and why.
        events = [e for e in kube.items("events", ns) if e["involvedObject"]["name"] == MODEL
                  and e["source"].get("component") == "slmfleet-autoscaler"]  # fmt: skip
        scaled = [e for e in events if e["reason"] == "InFlightAboveTarget"]
        assert len(scaled) == 1, events
        assert scaled[0]["message"].startswith(f"scaled from 1 to {out[0].replicas}:")

        # The operator's own status writes may drop the Scaling condition (they replace the
        # conditions list); the loop puts it back on its next tick.
        await h.until(lambda o: "Scaling" in {c["type"] for c in
                      (h.bodies[0].get("status") or {}).get("conditions", [])},
                      what="the Scaling condition")  # fmt: skip
        cond = scaling(h.bodies[0])
        assert cond["status"] == "True"

        # Load gone, stabilisation window 600 s: it holds, and once its status says so,
        # further ticks write nothing at all.
        await h.until(lambda o: o[0].reason == "StabilizingScaleDown", what="holding")
        await h.until(lambda o: not o[0].status_written, what="a quiet tick")
        before = sum(kube_client.writes.values())
        for _ in range(3):
            quiet = await h.tick()
            assert not quiet[0].scaled and not quiet[0].status_written
        assert sum(kube_client.writes.values()) == before
    finally:
        stop.set()
        if load is not None:
            with contextlib.suppress(Exception):
                await load
        await h.close()


async def test_unreachable_metrics_hold_and_say_so(kube, namespace, kube_client):
    ns = namespace
    kube.apply(manifest("held"), ns)
    kube("scale", "slm/held", "--replicas=3", "-n", ns)  # kubectl scale works on a specialist
    dead = ScrapeTargets(router=[f"http://127.0.0.1:{free_port()}/metrics"])
    h = Harness(kube_client, ns, dead)
    try:
        out = await h.until(lambda o: o and o[0].status_written, what="a status write")
        assert (out[0].replicas, out[0].reason, out[0].scaled) == (3, "MetricsUnavailable", False)
        body = kube.get("slm", "held", ns)
        cond = scaling(body)
        assert (cond["status"], cond["reason"]) == ("False", "MetricsUnavailable")
        assert "unreachable" in cond["message"]
        assert body["spec"]["replicas"] == 3 and "observed" not in body["status"]
        warnings = [e for e in kube.items("events", ns) if e["type"] == "Warning"
                    and e["reason"] == "MetricsUnavailable"]  # fmt: skip
        assert len(warnings) == 1
        for _ in range(2):  # no repeated Warning, no write while nothing changes
            assert not (await h.tick())[0].status_written
    finally:
        await h.close()


async def test_failing_discovery_holds_without_ending_the_loop(kube, namespace, kube_client):
    kube.apply(manifest("blind"), namespace)
    h = Harness(kube_client, namespace, None)
    try:
        out = await h.until(lambda o: o and o[0].status_written, what="a status write")
        assert (out[0].replicas, out[0].reason) == (1, "MetricsUnavailable")
        cond = scaling(kube.get("slm", "blind", namespace))
        assert "scrape targets unavailable" in cond["message"]
        assert "EndpointSlices unreadable" in cond["message"]
    finally:
        await h.close()


async def test_second_owner_and_other_modes_are_reported_not_fought(kube, namespace, kube_client):
    ns = namespace
    kube.apply(manifest("claimed"), ns)
    kube.apply(manifest("manual", mode="none"), ns)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "someone-else"},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "slmfleet.io/v1alpha1",
                "kind": "SLMSpecialist",
                "name": "claimed",
            },
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }
    kube.apply(hpa, ns)
    h = Harness(kube_client, ns, ScrapeTargets(router=[]))
    try:
        out = await h.until(lambda o: len(o) == 2 and all(x.status_written for x in o))
        reasons = {o.key.split("/")[1]: o.reason for o in out}
        assert reasons == {"claimed": "ConflictingAutoscaler", "manual": "ManualScaling"}
        assert "someone-else" in scaling(kube.get("slm", "claimed", ns))["message"]
        assert all(not o.scaled for o in out)
    finally:
        await h.close()


async def test_a_count_the_bounds_override_is_set_to_what_runs(kube, namespace, kube_client):
    body = manifest("floor")
    body["spec"]["serving"]["replicas"] = {"min": 3, "max": 4}
    kube.apply(body, namespace)
    assert kube.get("slm", "floor", namespace)["spec"]["replicas"] == 1  # the default
    h = Harness(kube_client, namespace, ScrapeTargets(router=[]))
    try:
        out = await h.until(lambda o: o and o[0].status_written, what="a first decision")
        assert out[0].replicas == 3 and not out[0].scaled  # no change to what runs
        assert kube.get("slm", "floor", namespace)["spec"]["replicas"] == 3
        events = [e for e in kube.items("events", namespace)
                  if e["involvedObject"]["name"] == "floor" and e["type"] == "Normal"]  # fmt: skip
        assert events == []
        quiet = await h.tick()
        assert not quiet[0].status_written and not quiet[0].scaled
    finally:
        await h.close()


async def test_one_poison_specialist_never_fails_the_tick_for_the_others(
    kube, namespace, kube_client
):
    """A price past float range under a huge cap (accepted by the CRD) decides like no
    cap; an unexpected failure in one specialist's decision (planted through the spec
    seam) is held and reported on that specialist only; the others decide every tick."""
    ns = namespace
    cheap = manifest("cheap", maxCostUsdPerHour=1e6)
    cheap["spec"]["cost"] = {"replicaHourUsd": 1e-305}
    kube.apply(cheap, ns)
    kube.apply(manifest("broken"), ns)
    kube.apply(manifest("fine"), ns)
    h = Harness(kube_client, ns, ScrapeTargets(router=[]))
    real_spec_of = h.scaler.spec_of

    def spec_of(body):
        if body["metadata"]["name"] == "broken":
            raise ZeroDivisionError("planted")
        return real_spec_of(body)

    h.scaler.spec_of = spec_of
    try:
        out = await h.until(lambda o: len(o) == 3 and all(x.status_written for x in o))
        reasons = {o.key.split("/")[1]: o.reason for o in out}
        assert reasons["broken"] == "ScalerError"
        assert reasons["cheap"] == reasons["fine"] == "MetricsUnavailable"
        cond = scaling(kube.get("slm", "broken", ns))
        assert cond["status"] == "False" and "ZeroDivisionError: planted" in cond["message"]
        assert scaling(kube.get("slm", "cheap", ns))["reason"] == "MetricsUnavailable"
        assert len(await h.tick()) == 3  # and again: the loop goes on
    finally:
        await h.close()
