"""Query split, canary and shadow on the real Triton (the session's stand-in fleet:
billing and shipping domain models, the failing model) through the openai client."""

from __future__ import annotations

import logging
import time

import httpx
import openai
import orjson
import pytest

from slmfleet.router.rollouts import shadow_log

from .router_support import RouterThread, fleet_config, write_config

pytestmark = pytest.mark.integration

TWO_DOMAINS = "my package arrived damaged, and also can you send me a copy of my invoice"


def _extra_specialists(endpoint: str) -> list[dict]:
    def spec(name, model):
        return {"id": f"shop/{name}", "endpoint": endpoint, "tritonModel": model,
                "backend": "python", "ready": True,
                "cost": {"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2}}  # fmt: skip

    return [spec("billing-v2", "domain-billing"), spec("billing-broken", "failing")]


def _policy(name: str, rollouts=None, **routing) -> dict:
    one = not routing
    return {
        "modelName": name,
        "id": f"shop/{name}",
        "specialists": ["shop/billing"] if one else ["shop/billing", "shop/shipping"],
        "routing": {"semantic": {"enabled": False}} if one else routing,
        "cascade": [
            {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.5}},
            {"name": "large", "specialist": "shop/generalist"},
        ],
        "rollouts": rollouts or [],
    }


@pytest.fixture(scope="module")
def router(triton, tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "router.json"
    policies = [
        _policy("split", semantic={"minConfidence": 0.3}, split={"enabled": True}),
        _policy("nosplit", semantic={"minConfidence": 0.3}),
        _policy("canary", [{"specialist": "shop/billing", "candidate": "shop/billing-v2",
                            "percent": 30}]),
        _policy("rollback", [{"specialist": "shop/billing", "candidate": "shop/billing-broken",
                              "percent": 50, "rollback": {"minSamples": 10}}]),
        _policy("shadow", [{"specialist": "shop/billing", "candidate": "shop/shipping",
                            "mode": "shadow", "percent": 100}]),
    ]  # fmt: skip
    cfg = fleet_config(triton.grpc_url, extra_policies=policies)
    cfg["specialists"] += _extra_specialists(triton.grpc_url)
    write_config(path, cfg)
    with RouterThread(path) as r:
        yield r


@pytest.fixture
def client(router):
    return openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)


def chat(client, model, content, rid=None, **kw):
    headers = {"x-request-id": rid} if rid else None
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], extra_headers=headers, **kw
    )
    return raw.parse(), raw.headers


def metric(router, name: str, **labels) -> float:
    text = httpx.get(router.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- split --------------------------------------------------------------------------------


def test_a_two_domain_request_is_split_and_merged_in_order(client):
    resp, h = chat(client, "split", TWO_DOMAINS)
    assert h["x-slmfleet-split"] == "2"
    assert h["x-slmfleet-route"] == "shop/shipping,shop/billing"
    assert h["x-slmfleet-tier"] == "routed,routed"
    first, second = resp.choices[0].message.content.split("\n\n")
    assert first.startswith("damaged:") and second.startswith("invoice:")
    parts = resp.model_extra["slmfleet"]["split"]
    assert [p["route"] for p in parts] == ["shop/shipping", "shop/billing"]
    assert TWO_DOMAINS[slice(*parts[0]["chars"])] == "my package arrived damaged"
    assert sum(p["tokens"] for p in parts) == resp.usage.total_tokens
    # The same request without split goes to one specialist.
    _resp, h = chat(client, "nosplit", TWO_DOMAINS)
    assert "x-slmfleet-split" not in h and "," not in h["x-slmfleet-route"]


def test_split_streams_and_single_domain_requests_stay_whole(client):
    stream = client.chat.completions.create(
        model="split", messages=[{"role": "user", "content": TWO_DOMAINS}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("damaged:") and "\n\ninvoice:" in text
    assert chunks[-1].model_extra["slmfleet"]["route"] == "shop/shipping,shop/billing"
    resp, h = chat(client, "split", "where is my package, it has not arrived yet")
    assert "x-slmfleet-split" not in h and h["x-slmfleet-route"] == "shop/shipping"
    assert resp.choices[0].message.content.startswith("tracking:")


# -- canary -------------------------------------------------------------------------------


def test_canary_takes_its_share(client, router):
    targets = []
    for i in range(100):
        resp, h = chat(client, "canary", "can you send me a copy of my invoice", rid=f"c-{i}")
        arm = h["x-slmfleet-rollout"].removeprefix("canary:")
        targets.append(h["x-slmfleet-target"])
        assert h["x-slmfleet-route"] == "shop/billing"
        assert (h["x-slmfleet-target"] == "shop/billing-v2") == (arm == "candidate")
        assert resp.choices[0].message.content.startswith("invoice:")
    n = targets.count("shop/billing-v2")
    assert 15 <= n <= 45, n
    labels = {"policy": "canary", "candidate": "shop/billing-v2", "outcome": "ok"}
    assert metric(router, "slmfleet_router_rollout_requests_total", arm="candidate", **labels) == n
    assert metric(router, "slmfleet_router_rollout_requests_total", arm="incumbent", **labels) == (
        100 - n
    )


def test_a_failing_canary_is_rolled_back(client, router):
    arms = []
    for i in range(80):
        resp, h = chat(client, "rollback", "update my credit card please", rid=f"r-{i}")
        arms.append(h["x-slmfleet-rollout"])
        assert resp.choices[0].message.content  # always answered (escalated if need be)
        if h["x-slmfleet-rollout"] == "canary:candidate":
            assert h["x-slmfleet-escalations"] == "routed:error"
            assert h["x-slmfleet-tier"] == "large"
    assert "canary:rolled-back" in arms
    back = arms.index("canary:rolled-back")
    assert arms[:back].count("canary:candidate") >= 10
    assert set(arms[back:]) == {"canary:rolled-back"}
    gauge = "slmfleet_router_rollout_rolled_back"
    assert metric(router, gauge, policy="rollback", candidate="shop/billing-broken") == 1
    _resp, h = chat(client, "rollback", "update my credit card please", rid="after")
    assert h["x-slmfleet-target"] == "shop/billing"


# -- shadow -------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[dict] = []

    def emit(self, record):
        self.records.append(orjson.loads(record.getMessage()))


def test_shadow_mirrors_and_compares(client, router):
    cap = Capture()
    shadow_log.addHandler(cap)
    try:
        for i in range(5):
            resp, h = chat(client, "shadow", "can you send me a copy of my invoice", rid=f"s-{i}")
            assert h["x-slmfleet-rollout"] == "shadow:mirrored"
            assert h["x-slmfleet-target"] == "shop/billing"
            assert resp.choices[0].message.content.startswith("invoice:")
        deadline = time.monotonic() + 30
        while len(cap.records) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        shadow_log.removeHandler(cap)
    assert sorted(r["request_id"] for r in cap.records) == [f"s-{i}" for i in range(5)]
    for r in cap.records:
        assert r["incumbent_arm"]["answer"].startswith("invoice:")
        # The shipping model answers a billing question with a shipping label.
        assert r["candidate_arm"]["error"] is None
        assert not r["candidate_arm"]["answer"].startswith("invoice:")
        assert r["agree"] is False
        assert r["incumbent_arm"]["latency_ms"] > 0 and r["candidate_arm"]["latency_ms"] > 0
    labels = {"policy": "shadow", "candidate": "shop/shipping"}
    assert (
        metric(router, "slmfleet_router_shadow_comparisons_total", result="disagree", **labels) == 5
    )
    assert (
        metric(router, "slmfleet_router_shadow_latency_seconds_count", arm="candidate", **labels)
        == 5
    )
