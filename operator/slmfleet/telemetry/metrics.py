"""Prometheus metrics of the decision log, feedback and the review queue.

They live on the router's registry (``slmfleet.router.metrics.REGISTRY``) so the
router's ``/metrics`` exports them with the rest. Label values are bounded: drop
reasons and outcomes are fixed sets; queue names come from the review configuration
(a case filed to an unconfigured queue is counted under ``_other``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ..router.metrics import REGISTRY

DECISIONS_WRITTEN = Counter(
    "slmfleet_router_decisions_written_total",
    "Decision records written to the decision store.",
    registry=REGISTRY,
)
DECISIONS_DROPPED = Counter(
    "slmfleet_router_decisions_dropped_total",
    "Decision records not written: buffer_full (the store is slow or down and the "
    "buffer is full), store_error (the store refused a batch for good), shutdown "
    "(still buffered when the flush at shutdown gave up).",
    ["reason"],
    registry=REGISTRY,
)
DECISION_BUFFER = Gauge(
    "slmfleet_router_decision_buffer_records",
    "Decision records submitted and not yet written or dropped (read when scraped).",
    registry=REGISTRY,
)
DECISION_STORE_UP = Gauge(
    "slmfleet_router_decision_store_up",
    "1 while the decision store accepts writes, 0 after a failed write until one succeeds.",
    registry=REGISTRY,
)
DECISION_BATCH_SECONDS = Histogram(
    "slmfleet_router_decision_batch_write_seconds",
    "Time to write one batch of decision records.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "slmfleet_router_feedback_total",
    "Feedback received, by result: stored, unknown_request, invalid.",
    ["result"],
    registry=REGISTRY,
)
REVIEW_OPEN = Gauge(
    "slmfleet_router_review_open_cases",
    "Review cases not resolved, by queue and state (open, claimed).",
    ["queue", "state"],
    registry=REGISTRY,
)
REVIEW_OLDEST = Gauge(
    "slmfleet_router_review_oldest_open_age_seconds",
    "Age of the oldest unresolved case in the queue (0 when none).",
    ["queue"],
    registry=REGISTRY,
)
REVIEW_FILED = Counter(
    "slmfleet_router_review_cases_filed_total",
    "Review cases filed durably, by queue.",
    ["queue"],
    registry=REGISTRY,
)
REVIEW_RESOLVED = Counter(
    "slmfleet_router_review_cases_resolved_total",
    "Review cases resolved, by queue.",
    ["queue"],
    registry=REGISTRY,
)
REVIEW_SLA_BREACHES = Counter(
    "slmfleet_router_review_sla_breaches_total",
    "Cases still unresolved past their queue's SLA (each case counted once).",
    ["queue"],
    registry=REGISTRY,
)
REVIEW_RESOLVE_SECONDS = Histogram(
    "slmfleet_router_review_time_to_resolve_seconds",
    "Time from filing to resolution.",
    ["queue"],
    buckets=(10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400),
    registry=REGISTRY,
)
REVIEW_WEBHOOK_FAILURES = Counter(
    "slmfleet_router_review_webhook_failures_total",
    "Failed webhook deliveries (each attempt), by queue.",
    ["queue"],
    registry=REGISTRY,
)
REVIEW_STORE_ERRORS = Counter(
    "slmfleet_router_review_store_errors_total",
    "Review or feedback operations that failed because the store was unavailable.",
    registry=REGISTRY,
)


def queue_label(queue: str, known: object) -> str:
    """The queue as a label value: configured queues by name, anything else ``_other``."""
    return queue if queue in known else "_other"  # type: ignore[operator]
