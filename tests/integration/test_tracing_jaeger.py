"""Traces in a real OTLP receiver (Jaeger, queried through its API): a span per
request, one per cascade hop with its escalation reason, GenAI semantic-convention
attributes, the caller's trace continued and W3C trace context sent to an external
tier; both OTLP protocols; off by default without even importing the SDK."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from slmfleet.telemetry.record import DecisionRecord, TierAttempt
from slmfleet.telemetry.tracing import NOOP, Tracing, tracing_wanted

pytestmark = pytest.mark.integration


CALLER_SPAN = "00f067aa0ba902b7"


class External(http.server.BaseHTTPRequestHandler):
    """Stands in for an external OpenAI-compatible tier: records what it was sent."""

    seen: list[dict[str, str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        External.seen.append(dict(self.headers.items()))
        body = b'{"choices": [{"message": {"content": "ok"}}]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def external():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), External)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    External.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def tags(span: dict) -> dict:
    return {t["key"]: t["value"] for t in span["tags"]}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_request_and_hop_spans_arrive_in_jaeger(jaeger, external, protocol):
    service = f"router-test-{protocol.replace('/', '-')}-{time.monotonic_ns()}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http if protocol != "grpc" else jaeger.otlp_grpc,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": service,
    }
    tracing = Tracing.from_env(env)
    assert tracing.enabled
    caller_trace = os.urandom(16).hex()  # each run its own trace
    incoming = [(b"traceparent", f"00-{caller_trace}-{CALLER_SPAN}-01".encode())]
    sent: dict[str, str] = {}
    with tracing.request(incoming, model="support", request_id="req-42") as rs:
        with rs.hop("small", target="shop/billing", kind="specialist", max_tokens=64) as hop:
            hop.usage(input_tokens=11, output_tokens=7, finish_reason="stop")
            hop.escalated(["label_threshold:refund"])
        with rs.hop("vendor", target="external:big", kind="external", model="big") as hop:
            tracing.inject(sent)
            r = httpx.post(f"{external}/v1/chat/completions", json={}, headers=sent)
            assert r.status_code == 200
            hop.usage(input_tokens=11, output_tokens=20)
        record = DecisionRecord(
            "req-42",
            time.time(),
            "support",
            route="shop/billing",
            route_source="classifier",
            routing_confidence=0.8,
            tier="vendor",
            target="external:big",
            attempts=[
                TierAttempt("small", "rejected", ("label_threshold:refund",)),
                TierAttempt("vendor", "accepted"),
            ],
            prompt_tokens=22,
            completion_tokens=27,
            cost_usd=0.0004,
        )
        rs.finish(record)
    tracing.shutdown()  # flushes the batch processor

    trace = jaeger.trace(caller_trace, spans=3)
    spans = {s["operationName"]: s for s in trace["spans"]}
    assert set(spans) == {"chat support", "chat shop/billing", "chat big"}
    req, small, vendor = spans["chat support"], spans["chat shop/billing"], spans["chat big"]
    # The caller's trace is continued; hops are children of the request span.
    assert req["references"][0]["spanID"] == CALLER_SPAN
    for hop in (small, vendor):
        assert hop["references"][0]["spanID"] == req["spanID"]
    t = tags(req)
    assert t["gen_ai.request.model"] == "support"
    assert t["gen_ai.response.model"] == "external:big"
    assert (t["gen_ai.usage.input_tokens"], t["gen_ai.usage.output_tokens"]) == (22, 27)
    assert (t["slmfleet.policy"], t["slmfleet.route"], t["slmfleet.tier"]) == (
        "support",
        "shop/billing",
        "vendor",
    )
    assert t["slmfleet.request_id"] == "req-42" and t["span.kind"] == "server"
    s = tags(small)
    assert s["slmfleet.escalation.reason"] == "label_threshold:refund"
    assert (s["gen_ai.provider.name"], s["gen_ai.request.model"]) == ("triton", "shop/billing")
    assert s["gen_ai.request.max_tokens"] == 64 and s["span.kind"] == "client"
    events = [{f["key"]: f["value"] for f in log["fields"]} for log in small["logs"]]
    assert events == [
        {"event": "slmfleet.escalation", "slmfleet.escalation.reason": "label_threshold:refund"}
    ]
    assert tags(vendor)["gen_ai.provider.name"] == "openai"
    # W3C trace context reached the external tier: same trace, the vendor hop as parent.
    [headers] = External.seen
    _, trace_id, parent, _ = headers["traceparent"].split("-")
    assert (trace_id, parent) == (caller_trace, vendor["spanID"])
    assert trace["processes"][req["processID"]]["serviceName"] == service


def test_without_a_parent_a_new_trace_starts(jaeger):
    service = f"router-root-{time.monotonic_ns()}"
    tracing = Tracing.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http, "OTEL_SERVICE_NAME": service}
    )
    with tracing.request([], model="extract", request_id="r1", operation="text_completion") as rs:
        rs.finish(DecisionRecord("r1", time.time(), "extract", status=502, error="no tier"))
    tracing.shutdown()
    deadline = time.monotonic() + 20
    while not (found := jaeger.traces(service)) and time.monotonic() < deadline:
        time.sleep(0.1)
    [trace] = found
    [span] = trace["spans"]
    t = tags(span)
    assert span["operationName"] == "text_completion extract" and not span["references"]
    assert t["error.type"] == "502" and t["otel.status_code"] == "ERROR"


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_what_turns_tracing_on(env, want):
    assert tracing_wanted(env) == want


def test_off_by_default_is_a_shared_noop_and_imports_no_sdk():
    code = (
        "import sys\n"
        "from slmfleet.telemetry.tracing import Tracing, NOOP\n"
        "t = Tracing.from_env({})\n"
        "rs = t.request([], model='m', request_id='r')\n"
        "with rs as s:\n"
        "    with s.hop('a', target='b') as h:\n"
        "        h.usage(input_tokens=1); h.escalated(['x'])\n"
        "    s.finish(None)\n"
        "h = {}; t.inject(h)\n"
        "print(t.enabled, rs is NOOP, h, any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "{}", "False"]
    assert Tracing.disabled().request([], model="m", request_id="r") is NOOP
