"""Prometheus metrics of the router.

Label values come only from the configuration (policy model names, specialist ids, tier
names, validator names, configured labels) or small fixed sets, so cardinality is
bounded by the config, never by traffic. Unknown models are counted as ``_unknown``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "slmfleet_router_requests_total",
    "Requests by policy, final tier and HTTP status.",
    ["policy", "tier", "status"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "slmfleet_router_request_duration_seconds",
    "End-to-end request time.",
    ["policy"],
    buckets=_SLOW,
    registry=REGISTRY,
)
ADDED = Histogram(
    "slmfleet_router_added_latency_seconds",
    "Time spent in the router itself (end-to-end minus upstream calls).",
    ["policy"],
    buckets=_FAST,
    registry=REGISTRY,
)
UPSTREAM = Histogram(
    "slmfleet_router_upstream_duration_seconds",
    "Time of each upstream call.",
    ["policy", "specialist", "tier"],
    buckets=_SLOW,
    registry=REGISTRY,
)
TOKENS = Counter(
    "slmfleet_router_tokens_total",
    "Tokens by kind: input, output, reasoning.",
    ["policy", "specialist", "kind"],
    registry=REGISTRY,
)
COST = Counter(
    "slmfleet_router_cost_usd_total", "Spend in USD.", ["policy", "specialist"], registry=REGISTRY
)
ESCALATIONS = Counter(
    "slmfleet_router_escalations_total",
    "Tier escalations by reason.",
    ["policy", "tier", "reason"],
    registry=REGISTRY,
)
TRUNCATIONS = Counter(
    "slmfleet_router_truncations_total",
    "Reasoning cut short by the trace budget.",
    ["policy", "specialist"],
    registry=REGISTRY,
)
ROUTING_CONFIDENCE = Histogram(
    "slmfleet_router_routing_confidence",
    "Routing confidence of each request.",
    ["policy"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    registry=REGISTRY,
)
HUMAN_REVIEWS = Counter(
    "slmfleet_router_human_reviews_total",
    "Cases filed for human review.",
    ["policy", "queue"],
    registry=REGISTRY,
)
BUDGET_REJECTIONS = Counter(
    "slmfleet_router_budget_rejections_total",
    "Requests rejected with 429 by a Budget, by reason: limit (a window is full for "
    "now), too_large (the request's worst case alone passes a cap), ledger_unavailable "
    "(failClosed while the shared ledger does not answer).",
    ["policy", "reason"],
    registry=REGISTRY,
)
SPEND = Gauge(
    "slmfleet_router_spend_usd",
    "Settled spend in each budget window, as this replica last saw the ledger (the "
    "shared total with the Redis ledger).",
    ["budget", "window"],
    registry=REGISTRY,
)
SPEND_TOKENS = Gauge(
    "slmfleet_router_spend_tokens",
    "Settled tokens in each budget window, as this replica last saw the ledger.",
    ["budget", "window"],
    registry=REGISTRY,
)
BUDGET_EXCEEDED = Gauge(
    "slmfleet_router_budget_exceeded",
    "1 while a spend window is at or over its limit.",
    ["budget", "window", "action"],
    registry=REGISTRY,
)
BUDGET_PERCENT = Gauge(
    "slmfleet_router_budget_percent",
    "Settled spend of the Budget's fullest window, in percent of its limit.",
    ["budget"],
    registry=REGISTRY,
)
BUDGET_STEPS = Counter(
    "slmfleet_router_budget_step_requests_total",
    "Requests that met a degrade-ladder step (alert, halveReasoning, degrade, reject).",
    ["policy", "step"],
    registry=REGISTRY,
)
LEDGER_AVAILABLE = Gauge(
    "slmfleet_router_ledger_available",
    "1 while the shared spend ledger answers (always 1 for the in-process ledger); 0 "
    "while Budgets fall back to their failMode.",
    registry=REGISTRY,
)
LEDGER_PENDING = Gauge(
    "slmfleet_router_ledger_pending_batches",
    "Spend counted locally while the shared ledger was unreachable, not yet replayed.",
    registry=REGISTRY,
)
LEDGER_SECONDS = Histogram(
    "slmfleet_router_ledger_seconds",
    "Time of each ledger operation (reserve, settle).",
    ["op"],
    buckets=_FAST,
    registry=REGISTRY,
)
SPEND_OVERRUN = Counter(
    "slmfleet_router_spend_overrun_usd_total",
    "Settled cost beyond what the call had reserved (0 while reservations are true "
    "worst cases; see docs/budgets.md).",
    ["budget"],
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "slmfleet_router_circuit_open",
    "1 while the endpoint's circuit breaker is open.",
    ["endpoint"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "slmfleet_router_config_reloads_total",
    "Configuration loads by result.",
    ["result"],
    registry=REGISTRY,
)

INFLIGHT = Gauge(
    "slmfleet_router_inflight_requests",
    "Upstream calls in flight per specialist, those waiting for a replica included (every "
    "policy and tier; an autoscaling signal).",
    ["specialist"],
    registry=REGISTRY,
)
NO_REPLICA = Counter(
    "slmfleet_router_no_replica_total",
    "Requests that found the specialist without a replica (scaled to zero or starting) and "
    "went to the next tier or gave up waiting: demand that starts it (an autoscaling signal).",
    ["specialist"],
    registry=REGISTRY,
)
ESCALATED = Counter(
    "slmfleet_router_escalated_requests_total",
    "Requests escalated into a cascade tier, once per request whatever the reasons, counted "
    "as the tier takes them (sizes a fallback tier ahead of its queue).",
    ["policy", "tier"],
    registry=REGISTRY,
)
WAITING = Gauge(
    "slmfleet_router_waiting_requests",
    "Requests waiting for a replica of the specialist (none discovered yet: scale from zero).",
    ["specialist"],
    registry=REGISTRY,
)
REPLICAS = Gauge(
    "slmfleet_router_replicas",
    "Replicas (Pods) the router balances over per upstream endpoint, by state.",
    ["endpoint", "state"],
    registry=REGISTRY,
)
SPEND_RESERVED = Gauge(
    "slmfleet_router_spend_reserved_usd",
    "Worst-case spend held by tier calls in flight in the budget's fullest window, as "
    "this replica last saw the ledger (every replica's holds with the Redis ledger).",
    ["budget"],
    registry=REGISTRY,
)
CLASSIFIER_DECISIONS = Counter(
    "slmfleet_router_classifier_decisions_total",
    "Classifier decisions by the stage that made them: cache (recent identical text), "
    "cheap (TF-IDF stage alone), static (static-embedding stage), full (the embedding "
    "model too).",
    ["policy", "stage"],
    registry=REGISTRY,
)
CLASSIFIER_QUEUE = Gauge(
    "slmfleet_router_classifier_queue",
    "Requests waiting for the classifier worker.",
    registry=REGISTRY,
)
CLASSIFIER_BATCH = Histogram(
    "slmfleet_router_classifier_batch_size",
    "Requests per micro-batch through the classifier worker.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
CLASSIFIER_SHED = Counter(
    "slmfleet_router_classifier_shed_total",
    "Requests refused (503) because the classifier worker's queue was full.",
    registry=REGISTRY,
)

_BOUND: dict[tuple[Any, ...], Any] = {}


def bound(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, cached: the hot path skips prometheus-client's label
    validation and locked child lookup. Bounded like the metrics themselves (label
    values come from the config)."""
    key = (metric, *values)
    child = _BOUND.get(key)
    if child is None:
        child = _BOUND[key] = metric.labels(*values)
    return child
