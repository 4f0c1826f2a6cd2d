"""The real router (uvicorn in a thread) in front of the real Triton with telemetry on:
a decision store, reviewers and queues, policies whose decision log keeps texts and
whose human tiers answer in each mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from slmfleet.router.app import Settings
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.external import ExternalClients
from slmfleet.router.secrets import DirectorySecretResolver

from .router_support import RouterThread, fleet_config, write_config
from .telemetry_support import CLIENT_KEY, KEYS, make_telemetry


def review_policy(name: str, **human: Any) -> dict[str, Any]:
    """A policy whose first tier always fails (the ``failing`` stand-in), so every
    request reaches its human tier (queue tier2)."""
    return {
        "modelName": name,
        "id": f"shop/{name}",
        "specialists": ["shop/failing"],
        "routing": {"semantic": {"enabled": False}},
        "cascade": [
            {"name": "routed", "routed": True},
            {
                "name": "review",
                "human": {"queue": "tier2", "message": "held as case {case_id}", **human},
                "timeoutMs": 30000,
            },
        ],
    }


def split_review_policy() -> dict[str, Any]:
    """``review-split``: splits a request into a parcel part (shipping answers) and a
    lawyer part (the ``failing`` stand-in, then an async human tier)."""
    p = review_policy("review-split", mode="async")
    p["specialists"] = ["shop/shipping", "shop/failing"]
    p["routing"] = {
        "semantic": {"enabled": False},
        "split": {"enabled": True},
        "rules": [
            {"name": "parcels", "keywords": ["parcel"], "specialist": "shop/shipping"},
            {"name": "lawyers", "keywords": ["lawyer"], "specialist": "shop/failing"},
        ],
    }
    return p


def telemetry_config(triton_url: str, router_url: str | None = None) -> dict[str, Any]:
    cfg = fleet_config(
        triton_url,
        router_url=router_url,
        extra_policies=[
            review_policy("review-hold"),
            review_policy("review-async", mode="async"),
            review_policy("review-wait", mode="wait", waitSeconds=20),
            review_policy("review-wait-1s", mode="wait", waitSeconds=1, onTimeout="async"),
            split_review_policy(),
        ],
    )
    for p in cfg["policies"]:
        if p["modelName"] == "support":
            p["decisionLog"] = {"content": "full", "maxChars": 16}
        elif p["modelName"] == "extract":
            p["decisionLog"] = {"content": "hashed"}
    return cfg


@contextmanager
def telemetry_router(
    triton_url: str,
    store_url: str,
    workdir: Path,
    *,
    external_to_self: bool = False,
    **telemetry: Any,
) -> Iterator[RouterThread]:
    """The router with its telemetry on ``store_url`` (flushes every 50 ms).
    ``external_to_self``: policy ``outside`` has an external tier that is this router
    (on loopback, its key from a directory Secret resolver)."""
    path = workdir / "router.json"
    tel = make_telemetry(store_url, **telemetry)
    external = None
    if external_to_self:
        secrets = workdir / "secrets"
        (secrets / "shop" / "vendor").mkdir(parents=True, exist_ok=True)
        (secrets / "shop" / "vendor" / "token").write_text(CLIENT_KEY)
        external = ExternalClients(
            egress_policy=EgressPolicy.parse(["127.0.0.1"], ["127.0.0.1/32"], allow_http=True),
            secret_resolver=DirectorySecretResolver(secrets),
        )
    router = RouterThread(
        path,
        settings=Settings(api_keys=frozenset({CLIENT_KEY})),
        telemetry=tel,
        external=external,
    )
    self_url = router.url + "/v1" if external_to_self else None
    write_config(path, telemetry_config(triton_url, self_url))
    with router:
        yield router


def client_for(router: RouterThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def reviewer(router: RouterThread, who: str = "alice") -> httpx.Client:
    return httpx.Client(
        base_url=router.url, headers={"authorization": f"Bearer {KEYS[who]}"}, timeout=10
    )


def wait_decision(store: Any, rid: str, timeout: float = 10.0) -> dict[str, Any]:
    """The request's record once the writer committed it."""
    deadline = time.monotonic() + timeout
    while True:
        rec = store.get_decision(rid)
        if rec is not None:
            return rec
        if time.monotonic() > deadline:
            raise TimeoutError(f"decision {rid} was not written")
        time.sleep(0.05)
