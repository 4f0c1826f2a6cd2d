"""A small fleet for the end-to-end budget tests and the budget benchmark: manifests
(priced generalist stand-ins, one policy per Budget), the real routers over them, and
the helpers that drive them with the official OpenAI client and read the shared ledger.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from slmfleet.api.routerconfig import SpendWindowConfig
from slmfleet.budget.ledger import BudgetLimits, WindowState
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings
from slmfleet.local.cluster import free_port
from slmfleet.local.router import RouterProcess

#: USD per million tokens of the priced stand-in: a few hundred requests fill $0.5.
PRICE_IN, PRICE_OUT = 100.0, 300.0
WORDS = [
    "refund",
    "parcel",
    "invoice",
    "order",
    "late",
    "broken",
    "address",
    "card",
    "charge",
    "account",
    "email",
]


def specialist(name: str, **params: str) -> dict[str, Any]:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": f"pvc://slmfleet-models/{name}",
                "backend": "python",
                "parameters": {"standin": "generalist", "display_name": name, **params},
            },
            "domain": {"description": f"{name} answers anything"},
            "serving": {"resources": {"cpu": "500m", "memory": "1Gi"}},
            "cost": {"inputPerMillionUsd": PRICE_IN, "outputPerMillionUsd": PRICE_OUT},
        },
    }


def policy(name: str, target: str, timeout_ms: int = 10000) -> dict[str, Any]:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": name},
        "spec": {
            "modelName": name,
            "specialists": {"names": [target]},
            "routing": {"semantic": {"enabled": False}},
            "cascade": [{"name": "only", "routed": True, "timeoutMs": timeout_ms}],
        },
    }


def budget(name: str, policy_name: str, limit_usd: float, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "Budget",
        "metadata": {"name": name},
        "spec": {
            "appliesTo": {"policies": [policy_name]},
            "perRequest": {"maxOutputTokens": 48},
            "spend": [{"window": "1h", "limitUsd": limit_usd, "action": "reject"}],
            **spec,
        },
    }


def write_manifests(folder: Path, docs: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fleet.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    return folder


def limits(budget_id: str, limit_usd: float) -> BudgetLimits:
    return BudgetLimits(budget_id, (SpendWindowConfig(window="1h", limit_usd=limit_usd),))


async def window(url: str, budget_id: str, limit_usd: float = 1.0) -> WindowState:
    """The 1h window of a Budget as the shared ledger has it now."""
    led = RedisLedger(RedisSettings(url=url, timeout_s=2.0))
    try:
        read = await led.read([limits(budget_id, limit_usd)])
        assert read.available, read.error
        return read.states[(budget_id, "1h")]
    finally:
        await led.close()


async def settled(url: str, budget_id: str, limit_usd: float = 1.0, timeout: float = 10.0):
    """The window once nothing is held: routers settle in the background, a few
    milliseconds after their answers."""
    deadline = time.monotonic() + timeout
    while True:
        st = await window(url, budget_id, limit_usd)
        if st.reserved.nano_usd == 0 or time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


def start_router(config: Path, ledger_url: str, log_path: Path) -> RouterProcess:
    return RouterProcess(
        ["--config", str(config), "--ledger-url", ledger_url],
        port=free_port(),
        log_path=log_path,
        startup_timeout=240,
    ).start()


@dataclass
class Outcome:
    status: int
    cost: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    router: int = 0


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


async def ask(c: openai.AsyncOpenAI, model: str, rng: random.Random, router: int = 0) -> Outcome:
    """One chat completion of random size (prompt words, max_tokens); its outcome."""
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40)))
    try:
        raw = await c.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=rng.randint(4, 48),
        )
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return Outcome(
            exc.status_code,
            headers=dict(exc.response.headers),
            code=body.get("code"),
            router=router,
        )
    data = json.loads(raw.http_response.content)
    return Outcome(200, data["slmfleet"]["cost_usd"], dict(raw.headers), router=router)


async def load(
    urls: list[str],
    model: str,
    *,
    clients_per_router: int,
    max_requests: int,
    stop_after_429s: int,
    seed: int = 7,
) -> list[Outcome]:
    """Concurrent clients on every router until ``max_requests`` or every client saw
    ``stop_after_429s`` 429s in a row."""
    out: list[Outcome] = []
    sent = 0

    async def worker(i: int, url: str, router: int) -> None:
        nonlocal sent
        rng = random.Random(seed * 1000 + i)
        c = client(url)
        in_a_row = 0
        try:
            while sent < max_requests and in_a_row < stop_after_429s:
                sent += 1
                o = await ask(c, model, rng, router)
                out.append(o)
                in_a_row = in_a_row + 1 if o.status == 429 else 0
        finally:
            await c.close()

    tasks = [
        worker(r * clients_per_router + k, url, r)
        for r, url in enumerate(urls)
        for k in range(clients_per_router)
    ]
    await asyncio.gather(*tasks)
    return out


def access_lines(log: Path) -> list[dict[str, Any]]:
    """The routers' per-request decision lines (JSON) from a log file."""
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{") and '"request_id"' in raw:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def false_rejects(lines: list[dict[str, Any]], window_key: str, limit_usd: float) -> list[dict]:
    """429s the ledger's own view did not justify: spent + reserved + this request's
    worst case within the limit (and the window not exhausted). Must be none."""
    bad = []
    for rec in lines:
        if rec.get("status") != 429:
            continue
        refusal = rec.get("budget_refusal") or {}
        w = (refusal.get("windows") or {}).get(window_key)
        if w is None:
            bad.append(rec)
            continue
        # In the ledger's own unit (nano-dollars; a worst case rounds up), as it decided.
        spent = round(w["spent_usd"] * 1e9)
        need = (
            spent + round(w["reserved_usd"] * 1e9) + math.ceil(refusal["request_usd"] * 1e9 - 1e-6)
        )
        cap = math.floor(limit_usd * 1e9 + 1e-6)
        if need <= cap and spent < cap:
            bad.append(rec)
    return bad
