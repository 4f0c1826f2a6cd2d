"""The human-review tier: file a durable case, then answer the caller per the policy.

With a decision store (``telemetry.review.ReviewService``) the case (the conversation,
the earlier tiers' answers, why it escalated) is committed *before* the caller gets
anything, so a case id a caller sees always survives a crash; a store that cannot take
it fails the tier like any other (reason ``review_unavailable``). Then the tier's
``mode``: ``hold`` answers with the holding message (``{case_id}`` filled in), ``async``
with 202 and the case URL to poll (a streamed request, which cannot get a 202, and a
part of a split request, whose siblings answer too, get the holding message), ``wait``
holds the request for a reviewer's answer up to ``waitSeconds`` (and the tier's time),
then ``onTimeout``. The Decision names the queue (``x-slmfleet-human-review``) only once
the case is filed: a review tier that failed leaves a later tier's answer unmarked.

Without a store the review queue is a log stream, as before the decision store: one
JSON line per case on stderr, from a logger of its own that does not propagate, at INFO
with its own handler, so ``--log-level`` never drops a case; the caller gets the
holding message (modes other than hold need the store and fall back to it).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from ...api.routerconfig import HumanConfig
from ...telemetry.review import CaseInput
from ...telemetry.store import StoreError
from .. import metrics as m
from ..errors import UpstreamError
from .base import Answer, Outcome, TierCall
from .stream import Progress, consume, one_piece, verbatim

cases = logging.getLogger("slmfleet.router.review")
log = logging.getLogger("slmfleet.router")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_case_log() -> None:
    if not any(isinstance(h, _StderrHandler) for h in cases.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h.setLevel(logging.INFO)
        cases.addHandler(h)
    cases.setLevel(logging.INFO)
    cases.propagate = False


_setup_case_log()


def case_input(c: TierCall, queue: str) -> CaseInput:
    """What the reviewer sees: the conversation, each earlier answer and its reasons."""
    d, req = c.d, c.req
    conversation = list(req.messages) or [{"role": "user", "content": req.prompt}]
    answers = [
        {
            "tier": a.tier,
            "target": a.target,
            "answer": a.answer,
            "confidence": a.answer_confidence,
            "reasons": list(a.reasons),
        }
        for a in d.attempts
        if a.answer is not None
    ]
    return CaseInput(
        request_id=d.request_id,
        policy=c.policy.model_name,
        queue=queue,
        conversation=conversation,
        answers=answers,
        escalations=tuple(d.escalations),
    )


class HumanTier:
    def __init__(self, review: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.review = review
        """telemetry.review.ReviewService, or None: cases are log lines."""
        self.clock = clock
        self._warned = False

    async def call(self, c: TierCall) -> Answer:
        human = c.tier.cfg.human
        assert human is not None
        d = c.d
        d.target = f"human:{human.queue}"
        if self.review is None:
            text = self._log_case(c, human)
        else:
            caps, _ = c.caps(None)
            time_left, _own = c.timeout(caps, self.clock())
            mode = human.mode
            if mode == "async" and (c.req.stream or d.split_part):
                # A stream cannot become a 202, nor can one part of a split request (the
                # other parts' answers go out with it): the message names the case.
                mode = "hold"
            policy = human if mode == human.mode else human.model_copy(update={"mode": mode})
            t0 = self.clock()
            try:
                outcome = await self.review.answer(
                    case_input(c, human.queue), policy, max_wait_s=time_left
                )
            except StoreError as exc:
                log.warning("review case for %s not filed: %s", d.request_id, exc)
                raise UpstreamError(
                    f"review queue unavailable: {exc}",
                    reason="review_unavailable",
                    public="the review queue is unavailable",
                ) from None
            finally:
                # Filing the case and waiting for a reviewer (up to waitSeconds) is this
                # tier's upstream, as a model's generation is: not router-added latency.
                d.upstream_s += self.clock() - t0
            d.case_id = outcome.case.id
            d.human_queue = human.queue  # only a filed case: a failed tier is no review
            m.bound(m.HUMAN_REVIEWS, c.policy.model_name, human.queue).inc()
            if outcome.status == 202:
                return Answer(
                    Outcome("", status=202, body=outcome.body(), location=outcome.case_url)
                )
            text = outcome.text or ""
        p = await consume(
            one_piece(text),
            Progress(verbatim()),
            reasoning_cap=None,
            output_cap=None,
            emit=c.emit,
        )
        return Answer(Outcome(p.state.answer, emitted=p.emitted))

    def _log_case(self, c: TierCall, human: HumanConfig) -> str:
        """No store: the case is one JSON line on stderr; hold mode whatever the policy."""
        if human.mode != "hold" and not self._warned:
            self._warned = True
            log.warning(
                "human tier mode %s needs a decision store (SLMFLEET_DECISION_STORE): "
                "answering with the holding message",
                human.mode,
            )
        d = c.d
        case_id = uuid.uuid4().hex
        d.case_id, d.human_queue = case_id, human.queue
        m.bound(m.HUMAN_REVIEWS, c.policy.model_name, human.queue).inc()
        cases.warning(
            orjson.dumps(
                {
                    "event": "human_review",
                    "case_id": case_id,
                    "request_id": d.request_id,
                    "policy": c.policy.model_name,
                    "queue": human.queue,
                    "escalations": d.escalations,
                    "messages": list(c.req.messages),
                }
            ).decode()
        )
        return human.message.replace("{case_id}", case_id)
