"""Helpers for the router's integration tests: a config over the stand-in fleet, a
keyword classifier fallback, and the router served in-process by uvicorn."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from slmfleet.api.routerconfig import DomainConfig
from slmfleet.local.models import BILLING_EXAMPLES, SHIPPING_EXAMPLES
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.source import FileSource

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Scores:
    best: str | None
    confidence: float
    scores: dict[str, float]


class OverlapClassifier:
    """Tiny stand-in for DomainClassifier: best word overlap with any example."""

    def __init__(self, domains: Mapping[str, DomainConfig]) -> None:
        self.examples = {
            sid: [set(_WORD.findall(t.lower())) for t in [*d.examples, " ".join(d.keywords)]]
            for sid, d in domains.items()
        }

    @classmethod
    def fit(cls, domains: Mapping[str, DomainConfig]) -> OverlapClassifier:
        return cls(domains)

    def predict(self, text: str) -> Scores:
        words = set(_WORD.findall(text.lower()))
        scores = {}
        for sid, exs in self.examples.items():
            best = 0.0
            for ex in exs:
                if ex and words:
                    best = max(best, len(words & ex) / len(words | ex) ** 0.5 / len(words) ** 0.5)
            scores[sid] = round(min(1.0, best), 4)
        top = max(scores, key=scores.get) if scores else None
        return Scores(top, scores.get(top, 0.0) if top else 0.0, scores)


def classifier_factory(domains: Mapping[str, DomainConfig]) -> Any:
    """The router's real (staged) classifier when it is importable, else the overlap
    stand-in."""
    try:
        from slmfleet.router.staged import StagedClassifier
    except ImportError:
        return OverlapClassifier.fit(domains)
    return StagedClassifier.fit(domains)


def _flat(examples: Mapping[str, list[str]]) -> list[str]:
    return [e for exs in examples.values() for e in exs]


def fleet_config(
    endpoint: str,
    *,
    extra_policies: list[dict[str, Any]] | None = None,
    budgets: list[dict[str, Any]] | None = None,
    router_url: str | None = None,
) -> dict[str, Any]:
    """router.json over the default stand-in fleet served at ``endpoint``."""

    def spec(name: str, model: str, **kw: Any) -> dict[str, Any]:
        return {
            "id": f"shop/{name}",
            "endpoint": endpoint,
            "tritonModel": model,
            "backend": "python",
            "ready": True,
            **kw,
        }

    specialists = [
        spec(
            "billing",
            "domain-billing",
            domain={
                "description": "billing, invoices, refunds and payment methods",
                "keywords": ["refund", "invoice", "payment", "charge", "card"],
                "examples": _flat(BILLING_EXAMPLES),
                "labels": list(BILLING_EXAMPLES),
            },
            cost={"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2},
        ),
        spec(
            "shipping",
            "domain-shipping",
            domain={
                "description": "parcels, deliveries, tracking and damaged packages",
                "keywords": ["package", "parcel", "delivery", "tracking", "courier"],
                "examples": _flat(SHIPPING_EXAMPLES),
                "labels": list(SHIPPING_EXAMPLES),
            },
            cost={"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2},
        ),
        spec(
            "reasoner",
            "reasoner",
            reasoning={"startMarker": "<think>", "endMarker": "</think>"},
            cost={"inputPerMillionUsd": 0.5, "outputPerMillionUsd": 1.0},
        ),
        spec(
            "extractor", "extractor", cost={"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.1}
        ),
        spec(
            "generalist",
            "generalist",
            cost={"inputPerMillionUsd": 5.0, "outputPerMillionUsd": 15.0},
        ),
        spec("failing", "failing"),
    ]
    policies: list[dict[str, Any]] = [
        {
            "modelName": "support",
            "id": "shop/support",
            "specialists": ["shop/billing", "shop/shipping"],
            "routing": {
                "semantic": {"minConfidence": 0.3},
                "rules": [
                    {
                        "name": "refunds",
                        "keywords": ["refund", "money back"],
                        "specialist": "shop/billing",
                    }
                ],
            },
            "cascade": [
                {
                    "name": "routed",
                    "routed": True,
                    "accept": {"minAnswerConfidence": 0.5, "labelThresholds": {"refund": 0.97}},
                },
                {"name": "large", "specialist": "shop/generalist"},
            ],
            "fallback": {"onUnknownDomain": "large"},
        },
        {
            "modelName": "extract",
            "id": "shop/extract",
            "specialists": ["shop/extractor"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [
                {
                    "name": "small",
                    "routed": True,
                    "accept": {
                        "validators": [
                            {
                                "name": "order-json",
                                "jsonSchema": {"type": "object", "required": ["order_id"]},
                            }
                        ]
                    },
                },
                {"name": "large", "specialist": "shop/generalist"},
            ],
        },
        {
            "modelName": "think",
            "id": "shop/think",
            "specialists": ["shop/reasoner"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [{"name": "routed", "routed": True}],
            "budgets": ["shop/think-budget"],
        },
        {
            "modelName": "flaky",
            "id": "shop/flaky",
            "specialists": ["shop/failing"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [
                {"name": "routed", "routed": True},
                {"name": "review", "human": {"queue": "ops", "message": "queued for review"}},
                {"name": "large", "specialist": "shop/generalist"},
            ],
            "fallback": {"onError": "large"},
        },
    ]
    if router_url:
        policies.append(
            {
                "modelName": "outside",
                "id": "shop/outside",
                "specialists": ["shop/failing"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "routed", "routed": True},
                    {
                        "name": "vendor",
                        "external": {
                            "baseUrl": router_url,
                            "model": "shop/generalist",
                            "apiKey": {"namespace": "shop", "name": "vendor", "key": "token"},
                            "inputPerMillionUsd": 1.0,
                            "outputPerMillionUsd": 2.0,
                        },
                    },
                ],
            }
        )
    policies += extra_policies or []
    all_budgets = [
        {"id": "shop/think-budget", "perRequest": {"maxReasoningTokens": 8, "answerTokens": 16}}
    ]
    all_budgets += budgets or []
    return {"version": 1, "policies": policies, "specialists": specialists, "budgets": all_budgets}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RouterThread:
    """The real router app behind real uvicorn (uvloop + httptools) in a thread."""

    def __init__(
        self,
        config_path: Path | None,
        *,
        settings: Settings | None = None,
        poll_s: float = 0.1,
        discovery: Any = None,
        external: Any = None,
        telemetry: Any = None,
        source: Any = None,
        counter: Any = None,
    ) -> None:
        """``source``: where the configuration comes from instead of ``config_path``
        (e.g. the operator's ConfigMaps); ``counter``: the router's token counter
        (``__main__`` hands it the MiniLM tokenizer; None: the byte bound)."""
        self.port = free_port()
        self.app = RouterApp(
            settings=settings,
            source=source or FileSource(config_path, interval_s=poll_s),
            classifier_factory=classifier_factory,
            discovery=discovery,
            external=external,  # egress policy and Secret resolver of external tiers
            telemetry=telemetry,  # decision log, review queue, tracing (off when None)
            counter=counter,
        )
        cfg = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RouterThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not (self.server.started and self.app.snapshot is not None):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("router did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def write_config(path: Path, cfg: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(cfg))
    tmp.replace(path)


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)
