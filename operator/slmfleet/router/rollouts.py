"""Canary and shadow rollouts at run time; the decisions are ``rollout``'s.

For a request routed to a specialist that a policy rollout names as its incumbent
(and whose candidate is configured and Ready):

* **canary** - ``percent`` of those requests run the cascade with the candidate in
  the routed tier's place. How the routed tier did (ok, escalated, error) is counted
  per arm (a request whose routed tier a Budget refused counts for neither); once both
  arms have ``minSamples``, ``rollback_decision`` runs after every
  outcome, and when the candidate is worse by more than ``margin`` the canary is
  *rolled back by this router*: from then on every request goes to the incumbent,
  ``slmfleet_router_rollout_rolled_back`` is 1 and the decision says
  ``x-slmfleet-rollout: canary:rolled-back``, until the rollout's spec changes (a new
  spec starts a new canary) or the router restarts. Counts are per router replica.
  The candidate's own Budgets never refuse the request: one that rejects (in the
  router's view before the call, or the ledger's refused reservation) runs the routed
  tier on the incumbent (``canary:incumbent``).
* **shadow** - ``percent`` of those requests are also sent to the candidate in the
  background (its own deadline, never streamed, never returned; at most
  ``MAX_SHADOWS`` at once, the rest dropped and counted). When both answers are in,
  one JSON line on the ``slmfleet.router.shadow`` log gives both answers (clipped to
  ``MAX_LOGGED_CHARS``), their latencies, outcomes and agreement; metrics count
  agreement and latency per arm. Shadow calls use tokens: they are charged to the
  policy's and the candidate's Budgets like any call, and skipped while one of those or
  a Budget of the request is degraded or exceeded; a refused reservation is the
  candidate's error ``budget_exceeded`` in the comparison.

Every request of a rollout carries ``x-slmfleet-rollout`` (``canary:incumbent``,
``canary:candidate``, ``canary:rolled-back``, ``shadow:mirrored``, ``shadow:-``) and a
``rollout`` record in its body and log line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Gauge, Histogram

from ..api.routerconfig import RolloutConfig
from . import metrics as m
from .acceptance import evaluate
from .accounting import SpendRefused
from .calibration import answer_confidence as calibrated_answer
from .decision import Decision
from .errors import RouterError, UpstreamError
from .rollout import ArmStats, RollbackVerdict, agreement, arm_outcome, picked, rollback_decision
from .routing import RouteDecision
from .snapshot import PolicyRuntime, Snapshot, TierRuntime, budgets_for
from .tiers import Outcome, RequestRun
from .verdicts import note_ladder

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("slmfleet.router")
shadow_log = logging.getLogger("slmfleet.router.shadow")

MAX_SHADOWS = 64
MAX_LOGGED_CHARS = 2000
MAX_STATES = 1024

ROLLOUT_REQUESTS = Counter(
    "slmfleet_router_rollout_requests_total",
    "Requests of a rollout by arm (incumbent, candidate) and how the arm's tier did.",
    ["policy", "specialist", "candidate", "mode", "arm", "outcome"],
    registry=m.REGISTRY,
)
ROLLED_BACK = Gauge(
    "slmfleet_router_rollout_rolled_back",
    "1 once this router rolled the canary back (until its spec changes).",
    ["policy", "specialist", "candidate"],
    registry=m.REGISTRY,
)
SHADOW_RESULTS = Counter(
    "slmfleet_router_shadow_comparisons_total",
    "Shadowed requests by result: agree, disagree, candidate_error, incumbent_error, "
    "dropped (too many in flight).",
    ["policy", "specialist", "candidate", "result"],
    registry=m.REGISTRY,
)
SHADOW_LATENCY = Histogram(
    "slmfleet_router_shadow_latency_seconds",
    "Latency of both arms of shadowed requests.",
    ["policy", "specialist", "candidate", "arm"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=m.REGISTRY,
)


def _setup_shadow_log() -> None:
    """Comparisons are data, not diagnostics: their own stdout handler at INFO, not
    propagated, so ``--log-level`` never drops them."""
    if not shadow_log.handlers:
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(message)s"))
        shadow_log.addHandler(h)
    shadow_log.setLevel(logging.INFO)
    shadow_log.propagate = False


_setup_shadow_log()


@dataclass
class RolloutState:
    incumbent: ArmStats = field(default_factory=ArmStats)
    candidate: ArmStats = field(default_factory=ArmStats)
    rolled_back: bool = False
    verdict: RollbackVerdict | None = None


def _log_failure(task: asyncio.Task[None]) -> None:
    """A shadow task that failed outside its call is logged, never left unretrieved."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("shadow comparison failed", exc_info=exc)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_LOGGED_CHARS:
        return text
    return text[:MAX_LOGGED_CHARS] + "..."


class Rollouts:
    def __init__(self, engine: Engine, clock: Any = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock
        self.states: dict[tuple[str, str], RolloutState] = {}
        self.shadows: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        for t in list(self.shadows):
            t.cancel()

    async def wait_closed(self) -> None:
        """Wait for the cancelled shadow calls to unwind: their settles start as they do,
        so the ledger is closed only after (``Engine.aclose``)."""
        while self.shadows:
            await asyncio.gather(*list(self.shadows), return_exceptions=True)

    # -- which rollout --------------------------------------------------------------------
    @staticmethod
    def routed_tier(policy: PolicyRuntime) -> TierRuntime | None:
        return next((t for t in policy.tiers if t.cfg.routed), None)

    @staticmethod
    def active(snap: Snapshot, policy: PolicyRuntime, route: RouteDecision) -> RolloutConfig | None:
        """The rollout of the routed specialist, when its candidate can serve."""
        if route.specialist is None:
            return None
        ro = next((r for r in policy.rollouts if r.specialist == route.specialist), None)
        if ro is None:
            return None
        cand = snap.specialists.get(ro.candidate)
        return ro if cand is not None and cand.ready else None

    def state(self, policy: PolicyRuntime, ro: RolloutConfig) -> RolloutState:
        key = (policy.model_name, ro.model_dump_json())
        st = self.states.get(key)
        if st is None:
            if len(self.states) >= MAX_STATES:
                self.states.pop(next(iter(self.states)))
            st = self.states[key] = RolloutState()
            ROLLED_BACK.labels(policy.model_name, ro.specialist, ro.candidate).set(0)
        return st

    # -- the request --------------------------------------------------------------------
    async def cascade(self, run: RequestRun, route: RouteDecision) -> Outcome:
        """The engine's cascade, with the rollout of the routed specialist applied."""
        eng = self.engine
        snap, policy, d = run.snap, run.policy, run.d
        ro = self.active(snap, policy, route) if policy.rollouts else None
        routed = self.routed_tier(policy) if ro is not None else None
        if ro is None or routed is None:
            return await eng._cascade(run, route)
        if ro.mode == "shadow":
            return await self._shadowed(run, ro, routed, route)
        st = self.state(policy, ro)
        salt = f"{policy.model_name}|{ro.specialist}|{ro.candidate}"
        if not st.rolled_back and picked(d.request_id, ro.percent, salt):
            # The candidate's own Budgets: a rejecting one keeps the request on the incumbent.
            spend = eng.accounting.verdict(budgets_for(snap, policy, ro.candidate))
            note_ladder(d, spend)
            arm = "incumbent" if spend.reject else "candidate"
        else:
            arm = "incumbent"
        used = replace(route, specialist=ro.candidate) if arm == "candidate" else route

        def mark(arm: str) -> None:
            d.extra_headers["rollout"] = "canary:rolled-back" if st.rolled_back else f"canary:{arm}"
            d.extra["rollout"] = {
                "mode": "canary",
                "specialist": ro.specialist,
                "candidate": ro.candidate,
                "arm": arm,
                "rolled_back": st.rolled_back,
            }

        handed_over = False

        def incumbent_instead() -> RouteDecision:
            """The ledger refused the candidate's reservation on a Budget of its own."""
            nonlocal arm, handed_over
            arm, handed_over = "incumbent", True
            mark(arm)
            return route

        mark(arm)
        stand_in = incumbent_instead if arm == "candidate" else None
        try:
            out = await eng._cascade(run, used, stand_in=stand_in)
        except (RouterError, UpstreamError):
            if not handed_over:
                outcome = arm_outcome(d.escalations, routed.cfg.name, failed=True)
                self._record(policy, ro, st, arm, outcome)
            raise
        # A request handed over to the incumbent counts for neither arm: its routed tier's
        # escalations mix the candidate's refusal with the incumbent's run (counting the
        # incumbent's errors alone would flatter the candidate).
        if not handed_over:
            self._record(policy, ro, st, arm, arm_outcome(d.escalations, routed.cfg.name))
        return out

    def _record(
        self,
        policy: PolicyRuntime,
        ro: RolloutConfig,
        st: RolloutState,
        arm: str,
        outcome: str | None,
    ) -> None:
        if outcome is None or st.rolled_back:
            return
        ROLLOUT_REQUESTS.labels(
            policy.model_name, ro.specialist, ro.candidate, ro.mode, arm, outcome
        ).inc()
        if arm == "candidate":
            st.candidate = st.candidate.add(outcome)
        else:
            st.incumbent = st.incumbent.add(outcome)
        rb = ro.rollback
        st.verdict = rollback_decision(
            st.incumbent,
            st.candidate,
            margin=rb.margin,
            min_samples=rb.min_samples,
            confidence=rb.confidence,
            enabled=rb.enabled,
        )
        if st.verdict.rollback:
            st.rolled_back = True
            ROLLED_BACK.labels(policy.model_name, ro.specialist, ro.candidate).set(1)
            log.warning(
                orjson.dumps(
                    {
                        "event": "canary_rolled_back",
                        "policy": policy.model_name,
                        "specialist": ro.specialist,
                        "candidate": ro.candidate,
                        "incumbent_requests": st.incumbent.n,
                        "incumbent_bad": st.incumbent.bad,
                        "candidate_requests": st.candidate.n,
                        "candidate_bad": st.candidate.bad,
                        "margin": rb.margin,
                        "z": st.verdict.z,
                    }
                ).decode()
            )

    # -- shadow ---------------------------------------------------------------------------
    async def _shadowed(
        self, run: RequestRun, ro: RolloutConfig, routed: TierRuntime, route: RouteDecision
    ) -> Outcome:
        eng = self.engine
        policy, d = run.policy, run.d
        labels = (policy.model_name, ro.specialist, ro.candidate)
        salt = f"{policy.model_name}|{ro.specialist}|{ro.candidate}"
        wanted = picked(d.request_id, ro.percent, salt) and not (run.degrade or d.budget_exceeded)
        if wanted:  # the candidate's own Budgets too (read, not noted: not this request's)
            own = eng.accounting.verdict(budgets_for(run.snap, policy, ro.candidate))
            wanted = not (own.degrade or own.reject or own.exceeded)
        mirrored = wanted and len(self.shadows) < MAX_SHADOWS
        if wanted and not mirrored:
            SHADOW_RESULTS.labels(*labels, "dropped").inc()
        d.extra_headers["rollout"] = "shadow:mirrored" if mirrored else "shadow:-"
        d.extra["rollout"] = {
            "mode": "shadow",
            "specialist": ro.specialist,
            "candidate": ro.candidate,
            "mirrored": mirrored,
        }
        if not mirrored:
            return await eng._cascade(run, route)
        loop = asyncio.get_running_loop()
        incumbent: asyncio.Future[tuple[Any, ...] | None] = loop.create_future()
        task = loop.create_task(self._shadow(run, ro, routed, route, incumbent))
        self.shadows.add(task)
        task.add_done_callback(self.shadows.discard)
        task.add_done_callback(_log_failure)
        t0 = self.clock()
        try:
            out = await eng._cascade(run, route)
        except BaseException:
            if not incumbent.done():
                incumbent.set_result(None)
            raise
        outcome = arm_outcome(d.escalations, routed.cfg.name)
        incumbent.set_result((out.text, self.clock() - t0, outcome, d.tier))
        return out

    async def _shadow(
        self,
        run: RequestRun,
        ro: RolloutConfig,
        routed: TierRuntime,
        route: RouteDecision,
        incumbent: asyncio.Future[tuple[Any, ...] | None],
    ) -> None:
        """The candidate's answer to the same request, compared when both are in."""
        eng = self.engine
        policy = run.policy
        labels = (policy.model_name, ro.specialist, ro.candidate)
        c = Decision(f"{run.d.request_id}.shadow")
        c.policy = c.metric_policy = policy.model_name
        cfg = routed.cfg.model_copy(
            update={"name": "shadow", "routed": False, "specialist": ro.candidate}
        )
        tier = TierRuntime(cfg, routed.accept)
        now = self.clock()
        # Its own Decision, no client, its own timeout counted from now.
        shadow = replace(
            run, req=replace(run.req, stream=False), d=c, emit=None,
            deadline=now + cfg.timeout_ms / 1000, started=now,
        )  # fmt: skip
        call = shadow.tier_call(tier, replace(route, specialist=ro.candidate), None)
        answer, conf, error = None, None, None
        t0 = self.clock()
        try:
            got = await eng.specialist_tier.call(call)
            answer = got.outcome.text
            conf = calibrated_answer(policy.calibration, routed.cfg.name, answer, got.confidence)
        except UpstreamError as exc:
            error = exc.reason
        except RouterError as exc:
            error = exc.code or "bad_request"
        except SpendRefused as exc:  # its reservation: the candidate's or policy's Budget
            error = "budget_exceeded"
            log.debug("shadow of %s refused: %s", run.d.request_id, exc)
        except Exception as exc:  # a bug must not end the comparison unseen
            error = "internal_error"
            log.exception("shadow of %s failed: %s", run.d.request_id, exc)
        cand_s = self.clock() - t0
        cand_outcome: str | None
        if error is not None:  # a refused reservation: it did not run (as arm_outcome)
            cand_outcome = None if error == "budget_exceeded" else "error"
        else:
            reasons = evaluate(
                routed.accept, routing_confidence=route.confidence, answer=answer or "",
                answer_confidence=conf,
            )  # fmt: skip
            cand_outcome = "escalated" if reasons else "ok"
        inc = await incumbent
        SHADOW_LATENCY.labels(*labels, "candidate").observe(cand_s)
        if cand_outcome is not None:
            ROLLOUT_REQUESTS.labels(*labels, "shadow", "candidate", cand_outcome).inc()
        if inc is None:
            result, agree = "incumbent_error", None
            inc_text = inc_s = inc_outcome = inc_tier = None
        else:
            inc_text, inc_s, inc_outcome, inc_tier = inc
            SHADOW_LATENCY.labels(*labels, "incumbent").observe(inc_s)
            if inc_outcome is not None:
                ROLLOUT_REQUESTS.labels(*labels, "shadow", "incumbent", inc_outcome).inc()
            agree = None if error else agreement(inc_text, answer or "")
            result = "candidate_error" if error else ("agree" if agree else "disagree")
        SHADOW_RESULTS.labels(*labels, result).inc()
        shadow_log.info(
            orjson.dumps(
                {
                    "event": "shadow",
                    "request_id": run.d.request_id,
                    "policy": policy.model_name,
                    "specialist": ro.specialist,
                    "candidate": ro.candidate,
                    "agree": agree,
                    "incumbent_arm": {
                        "answer": _clip(inc_text),
                        "latency_ms": None if inc_s is None else round(inc_s * 1000, 3),
                        "outcome": inc_outcome,
                        "tier": inc_tier,
                    },
                    "candidate_arm": {
                        "answer": _clip(answer),
                        "latency_ms": round(cand_s * 1000, 3),
                        "outcome": cand_outcome,
                        "confidence": conf,
                        "error": error,
                        "tokens": c.total_tokens,
                        "cost_usd": round(c.cost_usd, 10),
                    },
                }
            ).decode()
        )
