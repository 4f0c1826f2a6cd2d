"""The human-review tier: file the case, answer with the policy's holding message.

The review "queue" is a log stream: one JSON line per case on stderr, from a logger of
its own that does not propagate, at INFO with its own handler, so ``--log-level`` (the
root logger's level) never drops a case.
"""

from __future__ import annotations

import logging
import sys

import orjson

from .. import metrics as m
from .base import Answer, Outcome, TierCall
from .stream import Progress, consume, one_piece, verbatim

cases = logging.getLogger("slmfleet.router.review")


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


class HumanTier:
    async def call(self, c: TierCall) -> Answer:
        human = c.tier.cfg.human
        assert human is not None
        d = c.d
        d.human_queue = human.queue
        d.target = f"human:{human.queue}"
        m.bound(m.HUMAN_REVIEWS, c.policy.model_name, human.queue).inc()
        cases.warning(
            orjson.dumps(
                {
                    "event": "human_review",
                    "request_id": d.request_id,
                    "policy": c.policy.model_name,
                    "queue": human.queue,
                    "escalations": d.escalations,
                    "messages": list(c.req.messages),
                }
            ).decode()
        )
        p = await consume(
            one_piece(human.message),
            Progress(verbatim()),
            reasoning_cap=None,
            output_cap=None,
            emit=c.emit,
        )
        return Answer(Outcome(p.state.answer, emitted=p.emitted))
