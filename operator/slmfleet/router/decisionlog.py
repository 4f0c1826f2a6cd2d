"""The router's side of the decision log: one record per request, built from its
Decision once the response is sent, handed to the writer (a bounded append that never
waits on the store; the writer thread encodes and writes it) and to the request's span.
"""

from __future__ import annotations

from ..telemetry.record import record_from_decision
from ..telemetry.runtime import Telemetry
from ..telemetry.tracing import NOOP
from .decision import Decision
from .protocol import ParsedRequest
from .snapshot import Snapshot
from .tiers import Outcome


def log_decision(
    tel: Telemetry,
    d: Decision,
    started: float,
    total: float,
    req: ParsedRequest | None,
    out: Outcome | None,
    snap: Snapshot | None,
) -> None:
    """Record ``d`` (``started``: wall-clock arrival; ``total``: seconds it took).

    Unauthenticated requests are not logged (the metrics count them): a caller without
    a key cannot fill the store. The prompt and the answer are kept only as the
    policy's ``decisionLog.content`` (else the router's default) says.
    """
    if d.status == 401:
        return
    policy = snap.policies.get(d.policy) if snap is not None else None
    rec = record_from_decision(
        d,
        started_at=started,
        duration_s=total,
        content=tel.content_for(policy.decision_log if policy is not None else None),
        prompt=req.prompt if req is not None else None,
        answer=out.text if out is not None and out.status == 200 else None,
        # only when the classifier ran: the text the learning loop learns examples from
        routing_text=req.routing_text if req is not None and d.raw_confidence is not None else None,
        kind=req.kind if req is not None else "chat",
        stream=req.stream if req is not None else False,
    )
    tel.record(rec)
    span = d.trace
    if span is not NOOP:
        span.finish(rec, **{"slmfleet.classifier.stage": d.classifier_stage})
        span.end()
