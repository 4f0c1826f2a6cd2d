"""Where the autoscaler scrapes: EndpointSlices -> metrics URLs, and the settings that
choose the router (a Service's Pods, or URLs for a router outside the cluster)."""

from __future__ import annotations

import pytest

from slmfleet.autoscale.targets import (
    SPECIALIST_SLICES,
    TargetConfig,
    discover,
    slice_urls,
    triton_urls,
)
from slmfleet.render.labels import common_labels


def endpoint(address, ready=None, terminating=None):
    cond = {}
    if ready is not None:
        cond["ready"] = ready
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": [address], "conditions": cond}


def slice_(endpoints, *, ports=None, family="IPv4", labels=None, namespace="ns"):
    return {
        "metadata": {"name": "s", "namespace": namespace, "labels": labels or {}},
        "addressType": family,
        "ports": ports if ports is not None else [{"name": "metrics", "port": 8002}],
        "endpoints": endpoints,
    }


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        ([slice_([endpoint("10.0.0.2"), endpoint("10.0.0.1", ready=True)])],
         ["http://10.0.0.1:8002/metrics", "http://10.0.0.2:8002/metrics"]),
        # Not ready (takes no traffic) or terminating (leaving): not scraped.
        ([slice_([endpoint("10.0.0.1", ready=False), endpoint("10.0.0.2", terminating=True)])],
         []),
        ([slice_([endpoint("fd00::1")], family="IPv6")], ["http://[fd00::1]:8002/metrics"]),
        ([slice_([endpoint("10.0.0.1")], family="FQDN")], []),
        # The port is found by name, whatever else the slice serves.
        ([slice_([endpoint("10.0.0.1")], ports=[{"name": "http", "port": 8080},
                                                {"name": "metrics", "port": 9090}])],
         ["http://10.0.0.1:9090/metrics"]),
        ([slice_([endpoint("10.0.0.1")], ports=[{"name": "http", "port": 8080}])], []),
    ],
)  # fmt: skip
def test_slice_urls(slices, expected):
    assert slice_urls(slices) == expected


def test_triton_urls_by_specialist_label():
    slices = [
        slice_([endpoint("10.0.0.1")], labels=common_labels("billing")),
        slice_([endpoint("10.0.0.2")], labels=common_labels("billing")),
        slice_([endpoint("10.0.1.1")], labels=common_labels("billing"), namespace="other"),
        slice_([endpoint("10.9.9.9")], labels={"app": "unrelated"}),
    ]
    assert triton_urls(slices) == {
        "ns/billing": ["http://10.0.0.1:8002/metrics", "http://10.0.0.2:8002/metrics"],
        "other/billing": ["http://10.0.1.1:8002/metrics"],
    }


class Lister:
    def __init__(self, slices, fail=None):
        self.slices, self.fail, self.calls = slices, fail, []

    async def list(self, kind, namespace=None, label_selector=None):
        self.calls.append((kind, namespace, label_selector))
        if self.fail:
            raise self.fail
        return self.slices.get((namespace, label_selector), [])


ROUTER = "kubernetes.io/service-name=slmfleet-router"


async def test_router_pods_from_the_router_service_and_tritons_per_namespace():
    router = slice_([endpoint("10.1.0.1")], ports=[{"name": "metrics", "port": 9090}])
    lister = Lister(
        {
            ("slmfleet-system", ROUTER): [router],
            ("a", SPECIALIST_SLICES): [slice_([endpoint("10.0.0.1")], labels=common_labels("x"),
                                              namespace="a")],
        }
    )  # fmt: skip
    config = TargetConfig(router_service="slmfleet-system/slmfleet-router", namespaces=("a", "b"))
    targets = await discover(lister, config)
    assert targets.router == ["http://10.1.0.1:9090/metrics"]
    assert targets.triton == {"a/x": ["http://10.0.0.1:8002/metrics"]}
    assert [c[1] for c in lister.calls] == ["slmfleet-system", "a", "b"]


async def test_router_urls_given_directly_and_triton_off():
    lister = Lister({})
    config = TargetConfig(router_urls=("http://127.0.0.1:1/metrics",), triton=False)
    targets = await discover(lister, config)
    assert targets.router == ["http://127.0.0.1:1/metrics"] and targets.triton == {}
    assert lister.calls == []


async def test_no_router_is_said_not_mistaken_for_a_lull():
    targets = await discover(Lister({}), TargetConfig())
    assert targets.router == () and "SLMFLEET_ROUTER_SERVICE" in targets.unavailable
    no_pods = await discover(Lister({}), TargetConfig(router_service="sys/r"))
    assert no_pods.router == () and "no ready router Pod behind Service sys/r" in (
        no_pods.unavailable
    )


async def test_api_errors_propagate():
    with pytest.raises(OSError):
        await discover(Lister({}, fail=OSError("refused")), TargetConfig(router_service="s/r"))
