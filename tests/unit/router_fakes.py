"""Fakes and helpers shared by the router's unit tests: a scripted upstream, a keyword
classifier, a small config, and shortcuts to run one request through the engine."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from slmfleet.api.budget import SpendWindow
from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.triton import Piece


class FakePool:
    """Scripted upstream: model name -> list of deltas, a callable making them, or an
    exception. Records each call (model, prompt, sampling) and its timeout."""

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[str, str, dict]] = []
        self.timeouts: list[float] = []
        self.shared: list[bool] = []
        self.loads: dict[str, tuple[int, int]] = {}
        """endpoint -> (active replicas, requests outstanding); default one idle replica."""

    async def stream(
        self, endpoint, model, prompt, sampling, *, timeout_s, request_id="", **kw
    ) -> AsyncIterator[Piece]:
        self.calls.append((model, prompt, dict(sampling)))
        self.timeouts.append(timeout_s)
        self.shared.append(bool(kw.get("shared")))
        out = self.script[model]
        if callable(out):
            out = out(prompt, sampling)
        if isinstance(out, Exception):
            raise out
        for text, conf in out:
            yield Piece(text, conf)

    def load(self, endpoint, model=""):
        return self.loads.get(endpoint, (1, 0))

    async def configure(self, specialists):
        pass

    async def close(self):
        pass


class PartialPool(FakePool):
    """Yields some pieces, then fails."""

    def __init__(self, pieces, exc):
        super().__init__({})
        self.pieces, self.exc = pieces, exc

    async def _gen(self):
        for p in self.pieces:
            yield Piece(p, None)
        raise self.exc

    def stream(self, endpoint, model, prompt, sampling, *, timeout_s, request_id="", **_):
        self.calls.append((model, prompt, dict(sampling)))
        return self._gen()


class KeywordClassifier:
    def __init__(self, domains):
        self.kw = {sid: set(d.keywords) for sid, d in domains.items()}

    def predict(self, text):
        words = set(text.lower().split())
        scores = {sid: (0.9 if kw & words else 0.1) for sid, kw in self.kw.items()}

        class S:
            pass

        s = S()
        s.scores = scores
        return s


def spec(name, model, **kw):
    return {
        "id": f"ns/{name}",
        "endpoint": "h:1",
        "tritonModel": model,
        "backend": "python",
        "ready": True,
        **kw,
    }


TINY = [{"window": "1h", "limitUsd": 0.00001, "action": "reject"}]

CONFIG = {
    "specialists": [
        spec(
            "a",
            "ma",
            domain={"keywords": ["alpha"]},
            cost={"inputPerMillionUsd": 1, "outputPerMillionUsd": 2},
        ),
        spec("b", "mb", domain={"keywords": ["beta"]}),
        spec("big", "mbig"),
        spec("think", "mthink", reasoning={}),
    ],
    "policies": [
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/a", "ns/b"],
            "cascade": [
                {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                {"name": "large", "specialist": "ns/big"},
                {"name": "review", "human": {"queue": "q", "message": "later"}},
            ],
        },
        {
            "modelName": "t",
            "id": "ns/t",
            "specialists": ["ns/think"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/bud"],
            "cascade": [{"name": "routed", "routed": True}],
        },
        {
            "modelName": "money",
            "id": "ns/money",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/cash"],
            "cascade": [{"name": "routed", "routed": True}],
        },
    ],
    "budgets": [
        {"id": "ns/bud", "perRequest": {"maxReasoningTokens": 2, "answerTokens": 3}},
        {"id": "ns/cash", "spend": TINY},
    ],
}


def words(text, conf=None):
    return [(w + " ", conf) for w in text.split()]


def cfg_with(policies=(), budgets=(), specialists=None):
    return {
        "specialists": specialists or CONFIG["specialists"],
        "policies": list(policies),
        "budgets": list(budgets),
    }


def one_tier(name, sid, **kw):
    return {
        "modelName": name,
        "id": f"ns/{name}",
        "specialists": [sid],
        "routing": {"semantic": {"enabled": False}},
        "cascade": [{"name": "routed", "routed": True}],
        **kw,
    }


MONEY = cfg_with(
    policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
    budgets=[{"id": "ns/cash", "spend": TINY}],
)


def make(script, config=CONFIG, **engine_kw):
    snap = build_snapshot(RouterConfig.model_validate(config), classifier_factory=KeywordClassifier)
    pool = FakePool(script)
    return snap, pool, Engine(pool, ExternalClients(), **engine_kw)


async def run(engine, snap, content, model="p", emit=None, **extra):
    """One chat request; a RouterError carries the request's Decision as ``.decision``."""
    req = parse_chat(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra},
        max_messages=8,
    )
    d = Decision("rid")
    try:
        return await engine.run(snap, req, d, emit), d
    except RouterError as exc:
        exc.decision = d
        raise


def spent(engine, budget_id, window="1h"):
    w = engine.accounting.window(budget_id, SpendWindow(window=window, limit_usd=1, action="alert"))
    return w.total(time.time())


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t
