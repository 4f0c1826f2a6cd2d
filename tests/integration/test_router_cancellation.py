"""A client that leaves, or a deadline that passes, stops the generation in the real
Triton: the next request to the same (one-instance) model starts at once instead of
waiting behind a generation nobody reads."""

from __future__ import annotations

import time

import httpx
import pytest

from slmfleet.local.models import StandIn
from slmfleet.router import metrics as m

from .router_support import RouterThread, write_config

pytestmark = pytest.mark.integration

TOKEN_DELAY_MS = 100
LONG = " ".join(f"word{i}" for i in range(40))  # the stand-in echoes it: ~55 tokens, ~5.5 s


def config(endpoint: str) -> dict:
    spec = {
        "id": "shop/slow",
        "endpoint": endpoint,
        "tritonModel": "slow",
        "backend": "python",
        "ready": True,
        "cost": {"inputPerMillionUsd": 1.0, "outputPerMillionUsd": 1.0},
    }

    def policy(name: str, timeout_ms: int = 30000) -> dict:
        return {
            "modelName": name,
            "id": f"shop/{name}",
            "specialists": ["shop/slow"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [{"name": "routed", "routed": True, "timeoutMs": timeout_ms}],
        }

    return {"version": 1, "specialists": [spec], "policies": [policy("slow"), policy("tight", 600)]}


@pytest.fixture
def slow_router(start_triton, tmp_path):
    server = start_triton({"slow": StandIn("generalist", {"token_delay_ms": str(TOKEN_DELAY_MS)})})
    path = tmp_path / "router.json"
    write_config(path, config(server.grpc_url))
    with RouterThread(path) as r:
        yield r


def quick_answer_seconds(url: str) -> float:
    """Time of a one-token request to the same model: long if it queues behind a
    generation still running in Triton."""
    t0 = time.monotonic()
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "slow", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200
    return time.monotonic() - t0


def gone(policy: str) -> float:
    return m.REQUESTS.labels(policy, "routed", "499")._value.get()


def test_a_streaming_client_that_leaves_stops_the_generation(slow_router):
    url = slow_router.url
    assert quick_answer_seconds(url) < 2  # warm, and the baseline for a free model
    before = gone("slow")
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": LONG}]}
    with (
        httpx.Client(timeout=30) as c,
        c.stream("POST", f"{url}/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"content":"Here' in line or '"content": "Here' in line:
                break  # the first token arrived: now leave
    # The generation (~5 s left) was cancelled in Triton: the model is free at once.
    assert quick_answer_seconds(url) < 2.0
    deadline = time.monotonic() + 5
    while gone("slow") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone("slow") == before + 1


def test_a_non_streaming_client_that_leaves_stops_the_generation(slow_router):
    url = slow_router.url
    before = gone("slow")
    body = {"model": "slow", "messages": [{"role": "user", "content": LONG}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.8)  # gives up, closes
    assert quick_answer_seconds(url) < 2.0
    deadline = time.monotonic() + 5
    while gone("slow") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone("slow") == before + 1


def test_the_deadline_reaches_triton(slow_router):
    url = slow_router.url
    t0 = time.monotonic()
    r = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "tight", "messages": [{"role": "user", "content": LONG}]},
        timeout=30,
    )
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 2.0
    assert quick_answer_seconds(url) < 2.0  # Triton stopped at the deadline too
