"""Prometheus text -> windows -> Signals: the pure half of the autoscaler's observation.

The router-side texts come from real prometheus_client registries shaped like
router/metrics.py (the same client the router uses), so the parser meets the real
exposition format; the Triton text is copied in Triton's own format.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slmfleet.api.routerconfig import PolicyConfig
from slmfleet.autoscale.signals import (
    NAMES,
    Sample,
    escalation_feeds,
    parse,
    quantile,
    signals_for,
    source_window,
)
from slmfleet.router import metrics as router_metrics

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)


class FakeRouter:
    """A registry with the router's metric names and labels (not the router itself)."""

    def __init__(self, *, gauges: bool = False) -> None:
        r = self.registry = CollectorRegistry()
        self.upstream = Histogram(
            "slmfleet_router_upstream_duration_seconds",
            "",
            ["policy", "specialist", "tier"],
            buckets=BUCKETS,
            registry=r,
        )
        # Per-reason escalations (not read: a request escalated for two reasons counts
        # twice there) beside the per-request count of escalations into a tier (read).
        self.escalations = Counter(
            "slmfleet_router_escalations_total", "", ["policy", "tier", "reason"], registry=r
        )
        self.escalated = Counter(
            "slmfleet_router_escalated_requests_total", "", ["policy", "tier"], registry=r
        )
        self.no_replica = Counter("slmfleet_router_no_replica_total", "", ["specialist"],
                                  registry=r)  # fmt: skip
        self.requests = Counter(
            "slmfleet_router_requests_total", "", ["policy", "tier", "status"], registry=r
        )
        if gauges:
            self.in_flight = Gauge("slmfleet_router_inflight_requests", "", ["specialist"],
                                   registry=r)  # fmt: skip
            self.waiting = Gauge("slmfleet_router_waiting_requests", "", ["specialist"],
                                 registry=r)  # fmt: skip

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def triton_text(success: float, queue_us: float, pending: float, model: str = "billing") -> str:
    return (
        "# HELP nv_inference_request_success Number of successful inference requests\n"
        "# TYPE nv_inference_request_success counter\n"
        f'nv_inference_request_success{{model="{model}",version="1"}} {success}\n'
        "# HELP nv_inference_queue_duration_us Cumulative inference queuing duration\n"
        "# TYPE nv_inference_queue_duration_us counter\n"
        f'nv_inference_queue_duration_us{{model="{model}",version="1"}} {queue_us}\n'
        "# HELP nv_inference_pending_request_count Instantaneous number of pending requests\n"
        "# TYPE nv_inference_pending_request_count gauge\n"
        f'nv_inference_pending_request_count{{model="{model}",version="1"}} {pending}\n'
    )


def test_the_names_match_the_routers_metrics():
    """What the autoscaler reads is what the router exports, with the labels it reads."""
    rm = router_metrics
    pairs = [
        (NAMES.upstream, rm.UPSTREAM, "specialist"),
        (NAMES.escalations, rm.ESCALATED, "tier"),
        (NAMES.in_flight, rm.INFLIGHT, "specialist"),
        (NAMES.waiting, rm.WAITING, "specialist"),
        (NAMES.unavailable, rm.NO_REPLICA, "specialist"),
    ]
    for name, metric, label in pairs:
        assert name.removesuffix("_total") == metric._name, name
        assert label in metric._labelnames, name


def test_parse_sums_policies_and_tiers_per_specialist():
    r = FakeRouter()
    r.upstream.labels("support", "shop/billing", "routed").observe(0.2)
    r.upstream.labels("other", "shop/billing", "small").observe(0.7)
    r.upstream.labels("support", "shop/large", "large").observe(0.07)
    r.escalations.labels("support", "routed", "label_threshold:refund").inc(3)
    r.escalations.labels("support", "routed", "answer_confidence").inc(2)
    r.escalated.labels("support", "large").inc(4)
    s = parse(r.text(), at=1.0)
    billing = s.upstream["shop/billing"]
    assert billing.count == 2 and billing.total == pytest.approx(0.9)
    assert dict(billing.buckets)[0.25] == 1 and dict(billing.buckets)[math.inf] == 2
    assert s.upstream["shop/large"].count == 1
    assert s.escalations == {("support", "large"): 4.0}  # per request, not per reason


def test_parse_triton():
    s = parse(triton_text(10, 5000, 2), at=0.0)
    assert (s.triton_success, s.triton_queue_us, s.triton_pending) == (
        {"billing": 10.0},
        {"billing": 5000.0},
        {"billing": 2.0},
    )


@pytest.mark.parametrize(
    "text",
    [
        "this is not { prometheus",
        'slmfleet_router_upstream_duration_seconds_count{specialist="a/b"} NaN\n',
        'nv_inference_request_success{model="m"} +Inf\n',
    ],
)
def test_malformed_text_is_an_error(text):
    with pytest.raises(ValueError):
        parse(text, at=0.0)


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ([], None),
        ([(0.1, 0), (math.inf, 0)], None),  # no observations
        ([(0.1, 100), (1.0, 100), (math.inf, 100)], 0.095),  # all in the first bucket
        ([(0.1, 0), (1.0, 100), (math.inf, 100)], 0.955),  # 0.1 + 0.9 x 0.95
        ([(0.1, 50), (1.0, 90), (math.inf, 100)], 1.0),  # p95 in +Inf: highest finite bound
        ([(0.1, 90), (0.5, 90), (1.0, 100), (math.inf, 100)], 0.75),
    ],
)
def test_quantile_like_prometheus(buckets, expected):
    got = quantile(0.95, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


def window_of(texts_at, window_s=30.0):
    return source_window([parse(t, at) for at, t in texts_at], window_s)


def test_window_rates_p95_and_littles_law():
    r = FakeRouter()
    r.upstream.labels("p", "shop/billing", "routed").observe(0.1)
    first = r.text()
    for _ in range(60):  # 60 requests of 0.3 s in 30 s: 2 rps, 0.6 in flight on average
        r.upstream.labels("p", "shop/billing", "routed").observe(0.3)
    w = window_of([(0.0, first), (30.0, r.text())])
    s = signals_for("shop/billing", None, [w], [])
    assert s.window_s == 30.0
    assert s.request_rps == pytest.approx(2.0)
    assert s.in_flight == pytest.approx(0.6)
    assert s.mean_ms == pytest.approx(300.0)
    assert 250.0 < s.p95_ms <= 500.0  # in the (0.25, 0.5] bucket
    assert s.queue_ms is None  # Triton not scraped


def test_window_uses_the_newest_sample_old_enough():
    r = FakeRouter()
    texts = []
    for t in range(0, 50, 5):  # one request per 5 s
        r.upstream.labels("p", "a/b", "routed").observe(0.1)
        texts.append((float(t), r.text()))
    w = window_of(texts, window_s=20.0)
    assert w.span == 20.0 and w.upstream["a/b"].count == 4


def test_counter_reset_counts_from_zero_and_a_new_series_counts_whole():
    before = FakeRouter()
    for _ in range(100):
        before.upstream.labels("p", "a/b", "routed").observe(0.1)
    after = FakeRouter()  # the router restarted: counters from zero
    for _ in range(7):
        after.upstream.labels("p", "a/b", "routed").observe(0.1)
    after.escalated.labels("p", "large").inc(4)  # born after the base sample
    after.no_replica.labels("a/b").inc(2)
    w = window_of([(0.0, before.text()), (10.0, after.text())])
    assert w.upstream["a/b"].count == 7  # not -93
    assert w.escalations[("p", "large")] == 4
    assert w.unavailable["a/b"] == 2


def test_several_routers_add_up_and_in_flight_is_the_larger_estimate():
    a, b = FakeRouter(gauges=True), FakeRouter(gauges=True)
    wins = []
    for r, n, g in ((a, 10, 3.0), (b, 30, 5.0)):
        t0 = r.text()
        for _ in range(n):
            r.upstream.labels("p", "a/b", "routed").observe(0.2)
        r.in_flight.labels("a/b").set(g)
        r.waiting.labels("a/b").set(1)
        wins.append(window_of([(0.0, t0), (10.0, r.text())]))
    s = signals_for("a/b", None, wins, [])
    assert s.request_rps == pytest.approx(4.0)
    # Gauges average over the window's samples: (0 + g) / 2 per router, 4 in all; Little's
    # law says 40 requests x 0.2 s / 10 s = 0.8: the gauge sees more (still running).
    assert s.in_flight == pytest.approx((3.0 + 5.0) / 2)
    assert s.waiting == pytest.approx(1.0)
    # Quiet gauges (sampled between requests) do not hide completed work: Little's law.
    quiet = []
    for r in (a, b):
        t0 = r.text()
        for _ in range(50):
            r.upstream.labels("p", "a/b", "routed").observe(0.4)
        r.in_flight.labels("a/b").set(0)
        quiet.append(window_of([(0.0, t0), (10.0, r.text())]))
    assert signals_for("a/b", None, quiet, []).in_flight == pytest.approx(100 * 0.4 / 10)


def test_triton_queue_time_per_request_and_pending_only():
    w = window_of([(0.0, triton_text(100, 1_000_000, 0)), (10.0, triton_text(150, 6_000_000, 4))])
    s = signals_for("shop/billing", "billing", [], [w])
    assert s.queue_ms == pytest.approx(100.0)  # 5 s queued over 50 requests
    stuck = window_of([(0.0, triton_text(100, 0, 8)), (10.0, triton_text(100, 0, 8))])
    s = signals_for("shop/billing", "billing", [], [stuck])
    assert s.queue_ms == pytest.approx(10_000.0)  # nothing finished, requests pending
    idle = window_of([(0.0, triton_text(100, 0, 0)), (10.0, triton_text(100, 0, 0))])
    assert signals_for("shop/billing", "billing", [], [idle]).queue_ms == 0.0


def test_escalated_requests_land_on_the_specialist_of_their_tier():
    policy = PolicyConfig.model_validate(
        {
            "modelName": "support",
            "id": "shop/support",
            "specialists": ["shop/billing"],
            "cascade": [
                {"name": "routed", "routed": True},
                {"name": "large", "specialist": "shop/large"},
                {"name": "review", "human": {"queue": "q"}},
            ],
        }
    )
    feeds = escalation_feeds([policy])
    assert feeds == {"shop/large": [("support", "large")]}
    r = FakeRouter()
    t0 = r.text()
    # 30 requests into "large" (from the routed tier or out of domain), 20 of them for
    # two reasons at once: 50 reasons, 30 requests.
    r.escalations.labels("support", "routed", "label_threshold:refund").inc(20)
    r.escalations.labels("support", "routed", "answer_confidence").inc(20)
    r.escalations.labels("support", "routing", "out_of_domain").inc(10)
    r.escalated.labels("support", "large").inc(30)
    r.escalated.labels("support", "review").inc(99)  # on to review: not this specialist
    w = window_of([(0.0, t0), (10.0, r.text())])
    s = signals_for("shop/large", None, [w], [], feeds["shop/large"])
    assert s.escalation_rps == pytest.approx(3.0)


def test_one_sample_is_no_window():
    assert source_window([Sample(0.0)], 30.0) is None
    assert source_window([Sample(5.0), Sample(5.0)], 30.0) is None
