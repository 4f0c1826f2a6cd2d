"""The router in front of the real Triton server, through the official openai client."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from slmfleet.router.app import Settings
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.external import ExternalClients
from slmfleet.router.secrets import DirectorySecretResolver

from .router_support import RouterThread, fleet_config, write_config

pytestmark = pytest.mark.integration

KEY = "test-key"

#: "extract" under a Budget whose cap the generalist's worst case (64 output tokens at
#: $15/M) exceeds on its own and the extractor's does not: every escalation is refused.
CAPPED = {
    "modelName": "capped",
    "id": "shop/capped",
    "specialists": ["shop/extractor"],
    "routing": {"semantic": {"enabled": False}},
    "budgets": ["shop/capped-budget"],
    "cascade": [
        {
            "name": "small",
            "routed": True,
            "accept": {
                "validators": [
                    {
                        "name": "order-json",
                        "jsonSchema": {"type": "object", "required": ["order_id"]},
                    }
                ]
            },
        },
        {"name": "large", "specialist": "shop/generalist"},
    ],
}
CAPPED_BUDGET = {
    "id": "shop/capped-budget",
    "spend": [{"window": "1h", "limitUsd": 0.0005, "action": "reject"}],
    "perRequest": {"maxOutputTokens": 64},
}


@pytest.fixture(scope="module")
def router(triton, tmp_path_factory, request):
    path = tmp_path_factory.mktemp("router") / "router.json"
    # The external tier's key, by reference: Secret shop/vendor, key token.
    secrets = path.parent / "secrets"
    (secrets / "shop" / "vendor").mkdir(parents=True)
    (secrets / "shop" / "vendor" / "token").write_text(KEY)
    # The external endpoint is this router on loopback over http: allowed explicitly.
    egress = EgressPolicy.parse(["127.0.0.1"], ["127.0.0.1/32"], allow_http=True)
    port_holder = RouterThread(
        path,
        settings=Settings(max_body_bytes=64 * 1024, max_messages=16, api_keys=frozenset({KEY})),
        external=ExternalClients(
            egress_policy=egress, secret_resolver=DirectorySecretResolver(secrets)
        ),
    )
    write_config(
        path,
        fleet_config(
            triton.grpc_url,
            router_url=port_holder.url + "/v1",
            extra_policies=[CAPPED],
            budgets=[CAPPED_BUDGET],
        ),
    )
    with port_holder as r:
        yield r


@pytest.fixture
def client(router):
    return openai.OpenAI(base_url=router.url + "/v1", api_key=KEY, max_retries=0)


def chat(client, model, content, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )
    return raw.parse(), raw.headers


def test_routes_to_the_right_domain_model(client):
    resp, h = chat(client, "support", "where is my package, it has not arrived yet")
    assert h["x-slmfleet-route"] == "shop/shipping" and h["x-slmfleet-tier"] == "routed"
    assert resp.choices[0].message.content.startswith("tracking:")
    resp, h = chat(client, "support", "can you send me a copy of my invoice")
    assert h["x-slmfleet-route"] == "shop/billing"
    assert resp.choices[0].message.content.startswith("invoice:")
    for name in (
        "request-id",
        "policy",
        "route",
        "tier",
        "confidence",
        "tokens",
        "cost-usd",
        "truncated",
        "escalations",
    ):
        assert f"x-slmfleet-{name}" in h
    assert int(h["x-slmfleet-tokens"]) == resp.usage.total_tokens > 0
    assert float(h["x-slmfleet-cost-usd"]) > 0


def test_asymmetric_label_threshold_escalates_with_reason(client):
    resp, h = chat(client, "support", "refund please")  # refund at 0.996 >= 0.97
    assert h["x-slmfleet-tier"] == "routed" and h["x-slmfleet-escalations"] == ""
    resp, h = chat(client, "support", "give me my money back")  # refund at ~0.78
    assert h["x-slmfleet-escalations"] == "routed:label_threshold:refund"
    assert h["x-slmfleet-tier"] == "large" and h["x-slmfleet-target"] == "shop/generalist"
    assert "generalist" in resp.choices[0].message.content


def test_out_of_domain_goes_to_fallback(client):
    _resp, h = chat(client, "support", "what is the airspeed of an unladen swallow")
    assert h["x-slmfleet-route"] == "-" and h["x-slmfleet-tier"] == "large"
    assert h["x-slmfleet-escalations"].startswith("routing:out_of_domain")


def test_json_validator_failure_escalates(client):
    resp, h = chat(client, "extract", "order id AB-12345 from bob@example.com")
    assert h["x-slmfleet-tier"] == "small" and '"order_id"' in resp.choices[0].message.content
    resp, h = chat(client, "extract", "no fields in this text")
    assert h["x-slmfleet-escalations"] == "small:validator:order-json"
    assert h["x-slmfleet-tier"] == "large"


def test_a_refused_escalation_returns_the_answer_already_paid_for(client):
    resp, h = chat(client, "capped", "order id AB-12345 from bob@example.com")
    assert h["x-slmfleet-tier"] == "small" and "x-slmfleet-accepted" not in h
    # Not JSON: the validator escalates, the Budget refuses the generalist's reservation,
    # and the extractor's answer (generated and charged) is returned, not a 429.
    resp, h = chat(client, "capped", "no fields in this text")
    assert h["x-slmfleet-escalations"] == "small:validator:order-json,large:budget_exceeded"
    assert h["x-slmfleet-tier"] == "small" and h["x-slmfleet-accepted"] == "false"
    assert h["x-slmfleet-target"] == "shop/extractor"
    assert resp.choices[0].message.content and float(h["x-slmfleet-cost-usd"]) > 0


def test_reasoner_is_cut_at_the_cap_and_still_answers(client):
    resp, h = chat(
        client, "think", "what is 2 + 3", extra_body={"sampling_parameters": {"think_tokens": 40}}
    )
    assert h["x-slmfleet-truncated"] == "true"
    msg = resp.choices[0].message
    assert msg.content == "The answer is 5."
    assert len(msg.model_extra["reasoning_content"].split()) == 8  # the budget's cap
    assert resp.usage.completion_tokens_details.reasoning_tokens == 8
    resp, h = chat(
        client, "think", "what is 2 + 3", extra_body={"sampling_parameters": {"think_tokens": 5}}
    )
    assert h["x-slmfleet-truncated"] == "false" and resp.choices[0].message.content == (
        "The answer is 5."
    )


def test_reasoner_streaming_truncated(client):
    with client.chat.completions.with_streaming_response.create(
        model="think",
        messages=[{"role": "user", "content": "what is 6 * 7"}],
        stream=True,
        extra_body={"sampling_parameters": {"think_tokens": 40}},
    ) as raw:
        assert raw.headers["x-slmfleet-truncated"] == "true"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "The answer is 42."


def test_failing_model_falls_back(client):
    _resp, h = chat(client, "flaky", "hello")
    assert h["x-slmfleet-escalations"] == "routed:error"
    assert h["x-slmfleet-tier"] == "large"  # fallback.onError skips the review tier


def test_external_tier_with_secret_key(client):
    # The external endpoint is the router itself, authenticated with the Secret-ref key.
    resp, h = chat(client, "outside", "hello there")
    assert h["x-slmfleet-tier"] == "vendor" and h["x-slmfleet-target"] == (
        "external:shop/generalist"
    )
    assert "generalist" in resp.choices[0].message.content


def test_streaming_sync(client):
    stream = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "where is my package"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("tracking:")
    assert chunks[-1].usage.total_tokens > 0


def test_completions_endpoint(client):
    resp = client.completions.create(model="shop/generalist", prompt="2 + 2", max_tokens=5)
    assert len(resp.choices[0].text.split()) == 5 and resp.choices[0].finish_reason == "length"
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="shop/billing", prompt="update my credit card", stream=True
        )
    )
    assert text.startswith("payment_method:")


async def test_async_client_concurrent(router):
    ac = openai.AsyncOpenAI(base_url=router.url + "/v1", api_key=KEY, max_retries=0)
    texts = ["where is my parcel", "send me my invoice", "my package arrived damaged"] * 4
    resps = await asyncio.gather(
        *(
            ac.chat.completions.create(model="support", messages=[{"role": "user", "content": t}])
            for t in texts
        )
    )
    assert all(r.choices[0].message.content for r in resps)
    stream = await ac.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "where is my parcel"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text.startswith("tracking:")
    await ac.close()


def test_error_cases(client, router):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "x"}] * 17
        )
    assert e.value.code == "too_many_messages"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router.url + "/v1", api_key="wrong", max_retries=0).models.list()
    h = {"authorization": f"Bearer {KEY}"}
    r = httpx.post(router.url + "/v1/chat/completions", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(
        router.url + "/v1/chat/completions",
        headers=h,
        json={"model": "support", "messages": [{"role": "user", "content": "x" * 70000}]},
    )
    assert r.status_code == 413
    r = httpx.post(
        router.url + "/v1/chat/completions",
        headers=h,
        json={"model": "shop/failing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"


def test_models_and_metrics(client, router):
    ids = {m.id for m in client.models.list()}
    assert {"support", "extract", "think", "flaky", "shop/billing", "shop/reasoner"} <= ids
    text = httpx.get(router.url + "/metrics").text
    for name in (
        "slmfleet_router_requests_total",
        "slmfleet_router_added_latency_seconds",
        "slmfleet_router_upstream_duration_seconds",
        "slmfleet_router_tokens_total",
        "slmfleet_router_cost_usd_total",
        "slmfleet_router_escalations_total",
        "slmfleet_router_truncations_total",
        "slmfleet_router_routing_confidence",
    ):
        assert name in text
    assert 'slmfleet_router_truncations_total{policy="think",specialist="shop/reasoner"}' in text
