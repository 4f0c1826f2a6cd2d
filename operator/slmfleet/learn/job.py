"""One learning run for one RouterPolicy, as the operator's loop starts it: a child
process (``python -m slmfleet.learn.job``) reading a JSON job on stdin and writing a
JSON result on stdout, so the fitting never holds the operator's event loop or GIL,
and its CPU time, memory and wall-clock time are bounded by the parent
(``controller/learning.py``).

Job: ``{"config": RouterConfig, "policy": "ns/name", "spec": RouterPolicySpec,
"store": URL, "passwordFile": path | null}``. Result: ``{"outcome": "proposed",
"outcomes": n, "status": {thresholdProposals, learning}}``, ``{"outcome": "too_few",
"outcomes": n, "needed": m}``, ``{"outcome": "store_unavailable", "message": ...}`` or
``{"outcome": "failed", "message": ...}``.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Outcomes from the store -> calibrators, thresholds from the policy's risk,
    re-learned routing and replay -> the status the operator writes (``propose``)."""
    from ..api.policy import RouterPolicySpec
    from ..api.routerconfig import RouterConfig
    from ..telemetry.store.base import StoreError
    from .pipeline import find_policy, learn, router_fit
    from .propose import status_patch
    from .store_outcomes import StoreOutcomes

    config = RouterConfig.model_validate(job["config"])
    spec = RouterPolicySpec.model_validate(job["spec"])
    policy = find_policy(config, job["policy"])
    settings = spec.learning
    if settings is None:
        return {"outcome": "failed", "message": "spec.learning is not set"}
    try:
        source = StoreOutcomes(job["store"], password_file=job.get("passwordFile"))
        records = list(source.outcomes(policies=(policy.model_name, policy.id)))
    except StoreError as exc:
        return {"outcome": "store_unavailable", "message": str(exc)[:512]}
    if len(records) < settings.min_outcomes:
        return {"outcome": "too_few", "outcomes": len(records), "needed": settings.min_outcomes}
    proposal, _ = learn(records, config, policy, spec, settings.risk, router_fit())
    status = status_patch(proposal)["status"]
    # The PNG evidence exists only where `slmfleet learn` writes it (a reviewer's
    # machine): the operator's proposals carry none.
    for p in status["thresholdProposals"]:
        p.pop("evidence", None)
    return {"outcome": "proposed", "outcomes": len(records), "status": status}


def main() -> int:
    job = orjson.loads(sys.stdin.buffer.read())
    try:
        result = run(job)
    except Exception as exc:  # reported to the operator, which sets the condition
        result = {"outcome": "failed", "message": f"{type(exc).__name__}: {exc}"[:512]}
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
