"""Helpers for the telemetry tests: the telemetry endpoints served by real uvicorn in a
thread (what ``slmfleet review serve`` runs), reviewers and queues, store URLs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from slmfleet.telemetry.record import DecisionRecord
from slmfleet.telemetry.runtime import Telemetry
from slmfleet.telemetry.settings import (
    DecisionLogSettings,
    QueueConfig,
    ReviewerConfig,
    ReviewSettings,
)

CLIENT_KEY = "client-key-0123456789"
KEYS = {
    "alice": "alice-key-0123456789abcdef",  # tier2 only
    "bob": "bob-key-0123456789abcdef00",  # tier2 and senior
    "root": "root-key-0123456789abcdef0",  # every queue
}
REVIEWERS = (
    ReviewerConfig(name="alice", key=KEYS["alice"], queues=["tier2"]),
    ReviewerConfig(name="bob", key=KEYS["bob"], queues=["tier2", "senior"]),
    ReviewerConfig(name="root", key=KEYS["root"], queues=["*"]),
)
QUEUES = {
    "tier2": QueueConfig(sla_seconds=3600, escalate_to="senior"),
    "senior": QueueConfig(sla_seconds=7200),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_auth(scope: Mapping[str, Any]) -> bool:
    """The router's check, as RouterApp.authorized does it."""
    for k, v in scope["headers"]:
        if k == b"authorization":
            return v.decode() == f"Bearer {CLIENT_KEY}"
    return False


def make_telemetry(
    url: str,
    *,
    queues: Mapping[str, QueueConfig] | None = None,
    clock: Callable[[], float] = time.time,
    flush_s: float = 0.05,
    tracing: Any = None,
    **review: Any,
) -> Telemetry:
    return Telemetry(
        log_settings=DecisionLogSettings(store_url=url, flush_interval_s=flush_s),
        review_settings=ReviewSettings(
            queues=dict(QUEUES if queues is None else queues),
            reviewers=REVIEWERS,
            sweep_interval_s=0.2,
            session_secret=b"s" * 32,
            **review,
        ),
        authorize_client=client_auth,
        tracing=tracing,
        clock=clock,
    )


class Served:
    """``Telemetry.http`` as a complete ASGI app behind real uvicorn."""

    def __init__(self, tel: Telemetry) -> None:
        self.tel = tel
        self.port = free_port()
        cfg = uvicorn.Config(
            tel.http,  # type: ignore[arg-type]
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

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("telemetry server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def decision(rid: str, policy: str = "support", **kw: Any) -> DecisionRecord:
    return DecisionRecord(request_id=rid, time=time.time(), policy=policy, **kw)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'decisions.db'}"


def bearer(who: str) -> dict[str, str]:
    key = CLIENT_KEY if who == "client" else KEYS[who]
    return {"authorization": f"Bearer {key}"}
