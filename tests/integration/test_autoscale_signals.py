"""The autoscaler's signals from the real router (``python -m slmfleet.router``) in front
of the real Triton server, loaded through the official openai client."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.autoscale.scrape import Collector, ScrapeTargets
from slmfleet.autoscale.signals import escalation_feeds
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port

pytestmark = pytest.mark.integration

VALID = "order id AB-12345 from bob@example.com"  # the extractor answers with JSON
INVALID = "no fields in this text"  # fails the validator: escalates to the large tier


def router_config(endpoint: str) -> dict:
    def spec(name: str, model: str) -> dict:
        return {"id": f"shop/{name}", "endpoint": endpoint, "tritonModel": model,
                "backend": "python", "ready": True}  # fmt: skip

    return {
        "version": 1,
        "specialists": [spec("extractor", "extractor"), spec("generalist", "generalist")],
        "policies": [
            {
                "modelName": "extract",
                "id": "shop/extract",
                "specialists": ["shop/extractor"],
                "routing": {"semantic": {"enabled": False}},
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
        ],
    }


@pytest.fixture(scope="module")
def config(triton) -> dict:
    return router_config(triton.grpc_url)


@pytest.fixture(scope="module")
def router(config, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("autoscale-router")
    path = workdir / "router.json"
    path.write_text(json.dumps(config))
    proc = RouterProcess(["--config", str(path)], port=free_port(), log_path=workdir / "log")
    proc.start()
    yield proc
    proc.stop()


async def load(url: str, prompts: list[str], concurrency: int) -> list[float]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(prompt: str) -> None:
        async with gate:
            t0 = time.monotonic()
            await client.chat.completions.create(
                model="extract", messages=[{"role": "user", "content": prompt}]
            )
            latencies.append(time.monotonic() - t0)

    await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    return latencies


async def test_signals_from_the_real_router_and_triton(router, triton, config):
    collector = Collector()
    triton_metrics = [triton.metrics_url]
    targets = ScrapeTargets(
        router=[router.url + "/metrics"],
        triton={"shop/extractor": triton_metrics, "shop/generalist": triton_metrics},
    )
    feeds = escalation_feeds(RouterConfig.model_validate(config).policies)
    # Requests escalated into the tier that names the generalist, once per request.
    assert feeds == {"shop/generalist": [("extract", "large")]}
    try:
        await collector.scrape(targets)
        none, why = collector.signals("shop/extractor", triton_model="extractor", window_s=60)
        assert none is None and "first window" in why

        latencies = await load(router.url, [VALID] * 30 + [INVALID] * 10, concurrency=4)
        await collector.scrape(targets)
        small, why = collector.signals("shop/extractor", triton_model="extractor", window_s=600)
        large, _ = collector.signals(
            "shop/generalist",
            triton_model="generalist",
            window_s=600,
            feeds=feeds["shop/generalist"],
        )
    finally:
        await collector.close()

    assert small is not None, why
    # Triton exports every series the queue signal is made of.
    seen = collector.samples[triton.metrics_url][-1]
    for table in (seen.triton_success, seen.triton_queue_us, seen.triton_pending):
        assert "extractor" in table, table
    assert seen.triton_success["extractor"] >= 40
    span = small.window_s
    # Every request reached the extractor; the ten invalid ones escalated to the generalist.
    assert small.request_rps * span == pytest.approx(40, abs=0.01)
    assert large.request_rps * span == pytest.approx(10, abs=0.01)
    assert large.escalation_rps * span == pytest.approx(10, abs=0.01)
    # Upstream latency lies within what the client saw end to end.
    assert 0 < small.mean_ms <= max(latencies) * 1000
    assert small.mean_ms <= small.p95_ms <= 1000 * 30.0
    # Little's law: the mean concurrency is rate x mean service time (the router's
    # in-flight gauge, idle at both scrapes, sees less).
    assert small.in_flight == pytest.approx(small.request_rps * small.mean_ms / 1000, rel=1e-6)
    # Triton's own account of the same requests: a queue time (0 or more), per request.
    assert small.queue_ms is not None and 0 <= small.queue_ms < small.mean_ms
    assert small.active and large.active


async def test_unreachable_router_means_no_signals(router):
    collector = Collector(timeout_s=1.0)
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    targets = ScrapeTargets(router=[router.url + "/metrics", dead])
    try:
        for _ in range(2):
            await collector.scrape(targets)
        signals, why = collector.signals("shop/extractor", triton_model=None, window_s=60)
    finally:
        await collector.close()
    assert signals is None
    assert "unreachable" in why and dead in why
