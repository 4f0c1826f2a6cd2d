"""Spans of real requests through the real router and Triton, in a real OTLP receiver
(Jaeger, queried through its API): the request span continues the caller's trace, one
span per cascade hop with its escalation reason and GenAI attributes, and the external
tier's call carries the W3C context (here the external tier is the router itself, so
its own request span lands in the same trace under the hop that called it)."""

from __future__ import annotations

import os
import time

import pytest

from slmfleet.telemetry.tracing import Tracing

from .telemetry_router import client_for, telemetry_router
from .telemetry_support import sqlite_url

pytestmark = pytest.mark.integration

CALLER_SPAN = "b7ad6b7169203331"


def tags(span: dict) -> dict:
    return {t["key"]: t["value"] for t in span["tags"]}


def test_spans_of_a_routed_request_and_its_external_hop(jaeger, triton, tmp_path):
    service = f"router-e2e-{time.monotonic_ns()}"
    tracing = Tracing.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http, "OTEL_SERVICE_NAME": service,
         "OTEL_BSP_SCHEDULE_DELAY": "100"}
    )  # fmt: skip
    with telemetry_router(
        triton.grpc_url, sqlite_url(tmp_path), tmp_path, external_to_self=True, tracing=tracing
    ) as router:
        client = client_for(router)
        trace_id = os.urandom(16).hex()
        parent = {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}
        raw = client.chat.completions.with_raw_response.create(
            model="support",
            messages=[{"role": "user", "content": "give me my money back"}],
            extra_headers=parent,
        )
        resp = raw.parse()
        trace = jaeger.trace(trace_id, spans=3)
        spans = {s["operationName"]: s for s in trace["spans"]}
        assert set(spans) == {"chat support", "chat shop/billing", "chat shop/generalist"}
        req = spans["chat support"]
        assert req["references"][0]["spanID"] == CALLER_SPAN
        t = tags(req)
        assert t["span.kind"] == "server" and t["gen_ai.request.model"] == "support"
        assert t["slmfleet.request_id"] == raw.headers["x-slmfleet-request-id"]
        assert (t["slmfleet.policy"], t["slmfleet.route"], t["slmfleet.tier"]) == (
            "support",
            "shop/billing",
            "large",
        )
        assert t["slmfleet.route.source"] == "rule:refunds"
        assert t["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
        assert t["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
        assert t["gen_ai.response.model"] == "shop/generalist"
        assert t["http.response.status_code"] == 200
        small, large = spans["chat shop/billing"], spans["chat shop/generalist"]
        for hop in (small, large):
            assert hop["references"][0]["spanID"] == req["spanID"]
            assert tags(hop)["span.kind"] == "client"
            assert tags(hop)["gen_ai.provider.name"] == "triton"
        s = tags(small)
        assert s["slmfleet.tier"] == "routed" and s["slmfleet.outcome"] == "escalated"
        assert s["slmfleet.escalation.reason"] == "label_threshold:refund"
        assert s["gen_ai.usage.output_tokens"] > 0 and s["gen_ai.response.finish_reasons"]
        events = [{f["key"]: f["value"] for f in log["fields"]} for log in small["logs"]]
        assert {"event": "slmfleet.escalation",
                "slmfleet.escalation.reason": "label_threshold:refund"} in events  # fmt: skip
        assert tags(large)["slmfleet.outcome"] == "accepted"

        # The external tier: the router calls itself; the W3C context makes the inner
        # request a child of the outer hop, in the caller's trace.
        trace_id = os.urandom(16).hex()
        client.chat.completions.create(
            model="outside",
            messages=[{"role": "user", "content": "anything"}],
            extra_headers={"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"},
        )
        trace = jaeger.trace(trace_id, spans=5)
        by_name: dict[str, list[dict]] = {}
        for s in trace["spans"]:
            by_name.setdefault(s["operationName"], []).append(s)
        [outer] = by_name["chat outside"]
        [failing] = by_name["chat shop/failing"]
        [vendor] = [s for s in by_name["chat shop/generalist"] if tags(s)["span.kind"] == "client"
                    and tags(s)["slmfleet.tier"] == "vendor"]  # fmt: skip
        [inner] = [s for s in by_name["chat shop/generalist"] if tags(s)["span.kind"] == "server"]
        assert tags(failing)["slmfleet.escalation.reason"] == "error"
        assert tags(failing)["otel.status_code"] == "ERROR"
        assert tags(vendor)["gen_ai.provider.name"] == "openai"
        assert vendor["references"][0]["spanID"] == outer["spanID"]
        assert inner["references"][0]["spanID"] == vendor["spanID"]  # W3C traceparent
        assert trace["processes"][outer["processID"]]["serviceName"] == service
    tracing.shutdown()
