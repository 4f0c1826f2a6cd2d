"""Fakes and helpers shared by the router's unit tests: a scripted upstream, a keyword
classifier, a small config, and shortcuts to run one request through the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

from slmfleet.api.routerconfig import RouterConfig, SpendWindowConfig
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.triton import Piece


def counted(text, conf, prompt, counts):
    """A piece as the stand-ins send it: with ``counts`` (the router asked), one output
    token per delta and the prompt's words as its input tokens."""
    if not counts:
        return Piece(text, conf)
    return Piece(text, conf, output_tokens=1, input_tokens=len(prompt.split()))


class FakePool:
    """Scripted upstream: model name -> list of deltas, a callable making them, or an
    exception. Records each call (model, prompt, sampling) and its timeout. Like a
    backend, it generates at most ``max_tokens`` deltas, and reports token counts like
    the stand-ins when asked (``counts``), unless ``counts=False``."""

    def __init__(self, script, *, counts=True):
        self.script = script
        self.report_counts = counts
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
        if isinstance(sampling.get("max_tokens"), int):
            out = out[: sampling["max_tokens"]]
        for text, conf in out:
            yield counted(text, conf, prompt, self.report_counts and kw.get("counts"))

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

    async def _gen(self, prompt, counts):
        for p in self.pieces:
            yield counted(p, None, prompt, counts)
        raise self.exc

    def stream(self, endpoint, model, prompt, sampling, *, timeout_s, request_id="", **kw):
        self.calls.append((model, prompt, dict(sampling)))
        return self._gen(prompt, self.report_counts and kw.get("counts"))


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


#: A window that admits one small request and refuses the next. Reservations hold the
#: worst case, so spend budgets come with an output cap: with maxOutputTokens 8 at
#: specialist a's prices (1 in, 2 out per million), a short prompt reserves < $0.00005
#: and a call settles ~$0.00002 (the test engine counts bytes: the ByteBound counter).
TINY = [{"window": "1h", "limitUsd": 0.00005, "action": "reject"}]
CAP8 = {"maxOutputTokens": 8}

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
        {"id": "ns/cash", "spend": TINY, "perRequest": CAP8},
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
    budgets=[{"id": "ns/cash", "spend": TINY, "perRequest": CAP8}],
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


def window_state(engine, budget_id, window="1h"):
    """A window of the engine's (in-process) ledger, as it is now."""
    limits = BudgetLimits(budget_id, (SpendWindowConfig(window=window, limit_usd=1),))
    return engine.accounting.ledger.view([limits])[(budget_id, window)]


def spent(engine, budget_id, window="1h"):
    return window_state(engine, budget_id, window).spent.usd


def held(engine, budget_id, window="1h"):
    return window_state(engine, budget_id, window).reserved.usd


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t
