"""The load generator: raw HTTP/1.1 keep-alive connections, open and closed loops,
percentiles, and the router's own added-latency histogram."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import httptools
from _bench_procs import API_KEY, tree_cpu_seconds

from slmfleet.router.triton import TritonPool

PROMPT = "What is the capital of France? Answer in one word."
CALL_TIMEOUT_S = 30.0


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (httptools parser)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.broken = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(self.parser.get_status_code())

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionError("closed"))

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def request(self, raw: bytes) -> int:
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.fut


class HTTPPool:
    def __init__(self, port: int, max_conns: int) -> None:
        self.port = port
        self.max = max_conns
        self.free: list[Conn] = []
        self.n = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def _open(self) -> Conn:
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(Conn, "127.0.0.1", self.port)
        c.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    async def acquire(self) -> Conn:
        while self.free:
            c = self.free.pop()
            if not c.broken and not c.transport.is_closing():
                return c
            # The server closed it while idle (keep-alive timeout): forget it.
            c.transport.close()
            self.n -= 1
        if self.n < self.max:
            self.n += 1
            try:
                return await self._open()
            except BaseException:
                self.n -= 1
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def release(self, c: Conn) -> None:
        if c.broken:
            c.transport.close()
            self.n -= 1
            self._reopen_for_waiter()
            return
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(c)
                return
        self.free.append(c)

    def _reopen_for_waiter(self) -> None:
        """A slot freed by a broken connection goes to a waiter, on a new connection."""
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        if not self.waiters:
            return
        self.n += 1

        def opened(t: asyncio.Future) -> None:
            if t.cancelled() or t.exception() is not None:
                self.n -= 1
                while self.waiters:
                    w = self.waiters.popleft()
                    if not w.done():
                        w.set_exception(t.exception() or ConnectionError("cancelled"))
                        return
                return
            self.release(t.result())  # to a live waiter, else to the free list

        asyncio.ensure_future(self._open()).add_done_callback(opened)

    def close(self) -> None:
        for c in self.free:
            c.transport.close()
        self.free.clear()


def http_caller(pool: HTTPPool, path: str, bodies: bytes | Iterator[tuple[str, bytes]]):
    """A request maker; ``bodies``: one body for every request, or an endless iterator of
    (tag, body) so every request differs (the call returns its tag)."""
    it = itertools.repeat(("short", bodies)) if isinstance(bodies, bytes) else bodies
    head = (
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\nauthorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"content-length: "
    )

    async def call() -> str:
        tag, body = next(it)
        raw = head + str(len(body)).encode() + b"\r\n\r\n" + body
        c = await pool.acquire()
        try:
            status = await c.request(raw)
        except BaseException:
            c.broken = True
            raise
        finally:
            pool.release(c)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return tag

    return call


def grpc_caller(pool: TritonPool, endpoint: str, model: str):
    """The best direct call: the router's own gRPC client code (TritonPool on a shared
    ModelStreamInfer stream, same protobufs and channel options), no HTTP, no routing."""
    counter = itertools.count()

    async def call() -> str:
        gen = pool.shared_stream(
            endpoint, model, PROMPT, {}, timeout_s=30, request_id=f"direct-{next(counter)}"
        )
        async for _ in gen:
            pass
        return "short"

    return call


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return (xs[lo] + (xs[hi] - xs[lo]) * (k - lo)) * 1000


async def sequential(call, n: int, max_s: float) -> dict[str, Any]:
    lat = []
    errors = 0
    end = time.perf_counter() + max_s
    for _ in range(n):
        t = time.perf_counter()
        try:
            await asyncio.wait_for(call(), CALL_TIMEOUT_S)
            lat.append(time.perf_counter() - t)
        except Exception:
            errors += 1
        if time.perf_counter() > end:
            break
    return {"n": len(lat), "errors": errors, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


async def open_loop(call, rps: float, seconds: float, grace: float) -> dict[str, Any]:
    """Fixed-rate arrivals; latency counted from each request's scheduled time, kept per
    request tag too (e.g. short and long prompts in one run)."""
    n = max(1, int(rps * seconds))
    lat: list[float] = []
    by_tag: dict[str, list[float]] = collections.defaultdict(list)
    errors = 0
    lag: list[float] = []

    kinds: collections.Counter[str] = collections.Counter()

    async def one(due: float) -> None:
        nonlocal errors
        try:
            tag = await call()
            dt = time.perf_counter() - due
            lat.append(dt)
            by_tag[tag].append(dt)
        except Exception as exc:
            errors += 1
            kinds[str(exc)[:80]] += 1

    tasks = []
    start = time.perf_counter() + 0.005
    for i in range(n):
        due = start + i / rps
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay - 0.0005)
        lag.append(max(0.0, time.perf_counter() - due))
        tasks.append(asyncio.create_task(one(due)))
    sent_at = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - start
    return {
        "offered_rps": rps,
        "offered": n,
        "completed": len(lat),
        "errors": errors,
        "unfinished": len(pending),
        "achieved_rps": len(lat) / max(elapsed, sent_at - start),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "send_lag_p50_ms": pct(lag, 50),
        "error_kinds": dict(kinds.most_common(5)),
        "by_tag": {
            t: {"n": len(xs), "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99)}
            for t, xs in by_tag.items()
        },
    }


def added_histogram(url: str, policy: str) -> dict[float, float]:
    """The router's own slmfleet_router_added_latency_seconds buckets (cumulative)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("slmfleet_router_added_latency_seconds_bucket{") and (
            f'policy="{policy}"' in line
        ):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantiles(h0: dict[float, float], h1: dict[float, float]) -> dict[str, Any]:
    """p50/p99 upper bounds (bucket edges, ms) of what the router observed in between."""
    edges = sorted(h1)
    counts = [h1[e] - h0.get(e, 0.0) for e in edges]
    total = counts[-1] if counts else 0.0
    out: dict[str, Any] = {"n": total}
    for q in (50, 99):
        edge = next((e for e, c in zip(edges, counts, strict=True) if c >= total * q / 100), None)
        out[f"p{q}_le_ms"] = None if edge is None or not total else edge * 1000
    return out


async def drain(call, ref_s: float, max_s: float = 120.0) -> float:
    """Wait until a probe request is fast again: a proxy (or Triton) that fell behind
    keeps working through requests the generator already abandoned."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        t = time.perf_counter()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call(), CALL_TIMEOUT_S)
        if time.perf_counter() - t < max(3 * ref_s, ref_s + 0.005):
            break
        await asyncio.sleep(0.2)
    return round(time.perf_counter() - t0, 2)


async def closed_loop(call, conc: int, seconds: float, cpu_pid: int | None) -> dict[str, Any]:
    done = 0
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < end:
            try:
                await asyncio.wait_for(call(), CALL_TIMEOUT_S)
                done += 1
            except Exception:
                errors += 1

    cpu0 = tree_cpu_seconds(cpu_pid) if cpu_pid else 0.0
    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    dt = time.perf_counter() - t
    out: dict[str, Any] = {"rps": done / dt, "errors": errors, "concurrency": conc}
    if cpu_pid:
        used = tree_cpu_seconds(cpu_pid) - cpu0
        out["proxy_cpu_pct"] = 100 * used / dt
        # Requests per CPU-second of the proxy: its per-core ceiling, robust to other jobs
        # on the shared machine taking part of the core.
        out["rps_per_cpu_s"] = done / used if used > 0 else None
    return out


# ---- the run ---------------------------------------------------------------------------
