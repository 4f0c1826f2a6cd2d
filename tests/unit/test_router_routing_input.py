"""What routing looks at: bounded text."""

from __future__ import annotations

from dataclasses import replace

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat, parse_completion
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    CONFIG,
    FakePool,
    KeywordClassifier,
    words,
)


async def test_routing_text_is_capped_before_rules_and_classifier():
    big = "alpha " + "x" * 2_000_000 + " omega"
    r = parse_chat({"model": "p", "messages": [{"role": "user", "content": big}]}, max_messages=4)
    assert len(r.routing_text) <= 3001 and r.prompt == big
    assert r.routing_text.startswith("alpha ") and r.routing_text.endswith(" omega")
    assert len(parse_completion({"model": "p", "prompt": big}).routing_text) <= 3001

    seen: list[int] = []

    class Recording(KeywordClassifier):
        def predict(self, text):
            seen.append(len(text))
            return super().predict(text)

    snap = build_snapshot(RouterConfig.model_validate(CONFIG), classifier_factory=Recording)
    eng = Engine(FakePool({"ma": words("ok", 0.99)}), ExternalClients())
    req = replace(r, routing_text=big)  # built elsewhere: the engine bounds it too
    await eng.run(snap, req, Decision("r"))
    assert seen and max(seen) <= 3001
