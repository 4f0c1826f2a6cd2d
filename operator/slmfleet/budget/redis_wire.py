"""The shared ledger's wire: its settings, its Lua scripts and a strict reader of their
replies. Anything that is not the scripts' reply shape is ``LedgerUnavailable``, which
the ledger turns into its fail mode (see ``redis_ledger``): garbage never counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from .amounts import Amount
from .ledger import WindowState


class LedgerUnavailable(Exception):
    """Redis did not answer, or answered something that is not the scripts' reply."""


def load_script(name: str) -> str:
    lua = resources.files(__package__).joinpath("lua")
    return lua.joinpath("common.lua").read_text() + "\n" + lua.joinpath(name).read_text()


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    """redis:// or rediss:// (TLS); the password is better given apart."""
    password: str | None = None
    ca_file: str | None = None
    """CA bundle for rediss:// (the server's certificate is verified against it)."""
    key_prefix: str = "{slmfleet}"
    """Every key starts with it; the braces make one hash slot, so the scripts also run
    on Redis Cluster (on one shard)."""
    timeout_s: float = 0.25
    """Per operation: connect, send and answer."""
    retry_interval_s: float = 1.0
    max_connections: int = 64


def parse_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | bytes | str):
        raise LedgerUnavailable(f"garbage in ledger reply: {v!r}")
    try:
        return int(v)
    except ValueError as exc:
        raise LedgerUnavailable(f"garbage in ledger reply: {v!r}") from exc


class ReplyReader:
    """Strict reader of the scripts' flat integer replies."""

    def __init__(self, reply: Any) -> None:
        if not isinstance(reply, list):
            raise LedgerUnavailable(f"garbage ledger reply: {reply!r:.200}")
        self.items = reply
        self.pos = 0

    def int(self) -> int:
        if self.pos >= len(self.items):
            raise LedgerUnavailable("short ledger reply")
        v = parse_int(self.items[self.pos])
        self.pos += 1
        return v

    def state(self, with_buckets: bool, refused: bool = False) -> WindowState:
        su, st, ru, rt = self.int(), self.int(), self.int(), self.int()
        if min(su, st, ru, rt) < 0:
            raise LedgerUnavailable("negative totals in ledger reply")
        refused_ms = self.int() if refused else 0
        buckets = None
        if with_buckets:
            nb = self.int()
            buckets = {}
            for _ in range(nb):
                b, u, t = self.int(), self.int(), self.int()
                buckets[b] = Amount.from_nano(u, t)
        return WindowState(
            Amount.from_nano(su, st),
            Amount.from_nano(ru, rt),
            buckets,
            refused_ms / 1000 if refused_ms > 0 else None,
        )

    def done(self) -> None:
        if self.pos != len(self.items):
            raise LedgerUnavailable("long ledger reply")


def connect(s: RedisSettings) -> aioredis.Redis:
    """A client whose every wait is bounded by ``timeout_s`` (no retries: the ledger's
    fail modes decide what a failure means)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": s.timeout_s,
        "socket_connect_timeout": s.timeout_s,
        "max_connections": s.max_connections,
        "retry_on_timeout": False,
        "health_check_interval": 30,
    }
    if s.password is not None:
        kwargs["password"] = s.password
    if s.url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
        if s.ca_file:
            kwargs["ssl_ca_certs"] = s.ca_file
    return aioredis.from_url(s.url, **kwargs)
