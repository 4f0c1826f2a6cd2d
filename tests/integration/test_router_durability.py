"""kill -9 the real router process under load (real Triton, real SQLite/PostgreSQL),
restart it on the same store: every decision a reader saw committed is still there,
every decision answered more than the loss bound before the kill is there, every review
case a caller was told about is there, and the restarted router serves and joins
feedback to a decision from before the kill."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port
from slmfleet.telemetry.store import open_store

from .router_support import fleet_config
from .telemetry_router import review_policy
from .telemetry_support import CLIENT_KEY, sqlite_url

pytestmark = pytest.mark.integration

#: What a crash may lose (docs/telemetry.md): the last flush interval (0.2 s) plus the
#: batch being written. Asserted with room for a shared, loaded machine.
LOSS_BOUND_S = 2.0
LOAD_S = 3.0
WORKERS = 8


def config(triton_url: str) -> dict:
    cfg = fleet_config(triton_url)
    cfg["policies"] = [
        {
            "modelName": "plain",
            "id": "shop/plain",
            "specialists": ["shop/billing"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [{"name": "routed", "routed": True}],
        },
        review_policy("review-hold"),
    ]
    return cfg


def start_router(cfg_path: Path, url: str, log: Path) -> RouterProcess:
    env = {
        **os.environ,
        "SLMFLEET_DECISION_STORE": url,
        "SLMFLEET_API_KEYS": CLIENT_KEY,
        "SLMFLEET_ROUTER_DISCOVERY": "off",
    }
    return RouterProcess(
        ["--config", str(cfg_path), "--no-access-log"], port=free_port(), log_path=log, env=env
    ).start()


async def load(base: str, until: float, answered: list, cases: list) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < until:
                model = "review-hold" if n % 5 == 0 else "plain"
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": f"invoice {i}-{n}"}],
                }
                n += 1
                try:
                    r = await c.post("/v1/chat/completions", content=orjson.dumps(body))
                except httpx.HTTPError:
                    return  # the router is gone
                if r.status_code == 200:
                    answered.append((r.headers["x-slmfleet-request-id"], time.monotonic()))
                    if "x-slmfleet-review-case" in r.headers:
                        cases.append(r.headers["x-slmfleet-review-case"])

        await asyncio.gather(*(worker(i) for i in range(WORKERS)))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_nothing_committed_and_no_case(backend, triton, tmp_path, request):
    url = sqlite_url(tmp_path) if backend == "sqlite" else request.getfixturevalue("pg_url")
    cfg_path = tmp_path / "router.json"
    cfg_path.write_bytes(orjson.dumps(config(triton.grpc_url)))
    router = start_router(cfg_path, url, tmp_path / "router-1.log")
    reader = open_store(url)  # another process's view: what is committed
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(reader.decision_ids())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    answered: list[tuple[str, float]] = []
    cases: list[str] = []
    try:
        watcher.start()
        killer = threading.Timer(LOAD_S, lambda: os.killpg(router.pid, signal.SIGKILL))
        killed_at = time.monotonic() + LOAD_S
        killer.start()
        asyncio.run(load(router.url, time.monotonic() + LOAD_S + 5, answered, cases))
        killer.join()
        stop.set()
        watcher.join()
        router.proc.wait(timeout=10)
        assert router.proc.returncode == -signal.SIGKILL
    finally:
        stop.set()
        router.stop()
    assert len(answered) > 50 and len(cases) > 5, (len(answered), len(cases))
    stored = reader.decision_ids()
    assert seen and seen <= stored  # committed before the kill: still there
    old = {rid for rid, at in answered if at < killed_at - LOSS_BOUND_S}
    assert old and old <= stored, f"lost {len(old - stored)} decisions older than the bound"
    lost = {rid for rid, _ in answered} - stored
    assert len(lost) < len(answered) / 2  # the loss is a window, not the run
    assert all(reader.get_case(cid) is not None for cid in cases)  # filed before answered

    # Restarted on the same store: it serves, and feedback joins a pre-kill decision.
    again = start_router(cfg_path, url, tmp_path / "router-2.log")
    try:
        ready = httpx.get(again.url + "/readyz").json()
        assert ready["decision_log"]["ok"] is True and ready["review_queue"] == "store"
        rid = sorted(old)[0]
        fb = httpx.post(
            again.url + "/v1/feedback",
            json={"request_id": rid, "rating": 1},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
        assert fb.status_code == 200 and fb.json()["request_id"] == rid
    finally:
        again.stop()
        reader.close()
