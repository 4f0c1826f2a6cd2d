"""The shared ledger on a real redis-server: atomic limits across processes, expiry of a
dead replica's reservations, restarts with AOF, fail modes, TLS."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slmfleet.api.budget import LadderStep, SpendWindow
from slmfleet.budget.amounts import Amount
from slmfleet.budget.inprocess import InProcessLedger
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings
from slmfleet.local.cluster import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("ledger_load", ROOT / "benchmarks/ledger_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def uid(name: str) -> str:
    return f"test-{os.getpid()}-{time.monotonic_ns()}/{name}"


def reject_budget(limit: float, name: str = "b", mode: str = "failOpen") -> BudgetLimits:
    return BudgetLimits(
        uid(name), (SpendWindow(window="1h", limit_usd=limit, action="reject"),), fail_mode=mode
    )


def ledger(url: str, **kw) -> RedisLedger:
    return RedisLedger(RedisSettings(url=url, **kw))


async def spent(url: str, b: BudgetLimits) -> tuple[Amount, Amount]:
    led = ledger(url, timeout_s=2.0)
    read = await led.read([b])
    await led.close()
    st = read.states[(b.id, b.windows[0].window)]
    return st.spent, st.reserved


def test_same_rules_as_the_in_process_ledger(redis_server):
    """One random sequence of operations on both ledgers: same answers, same state."""
    rng = random.Random(9)
    t = [1_780_000_000.0]
    a = BudgetLimits(
        uid("a"),
        (
            SpendWindow(window="1m", limit_usd=0.05, action="reject"),
            SpendWindow(window="day", time_zone="Europe/Berlin", limit_tokens=4000),
        ),
        (LadderStep(at_percent=90, action="reject"),),
    )
    b = BudgetLimits(uid("b"), (SpendWindow(window="15m", limit_tokens=3000, action="reject"),))

    async def run() -> None:
        shared = RedisLedger(RedisSettings(url=redis_server.url), clock=lambda: t[0])
        local = InProcessLedger(clock=lambda: t[0])
        held: list[tuple] = []
        for step in range(400):
            op = rng.random()
            if op < 0.5:
                budgets = rng.choice([[a], [b], [a, b], [b, a, b]])
                amt = Amount(rng.uniform(0, 0.01), rng.randint(0, 400))
                x = await shared.reserve(budgets, amt, ttl_s=600)
                y = await local.reserve(budgets, amt, ttl_s=600)
                assert (x.admitted, x.reason, x.refused_by, x.retry_after_s) == (
                    y.admitted, y.reason, y.refused_by, y.retry_after_s,
                ), step  # fmt: skip
                if x.admitted:
                    held.append((x.reservation, y.reservation))
            elif op < 0.85 and held:
                rx, ry = held.pop(rng.randrange(len(held)))
                actual = Amount(rx.amount.usd * rng.random(), rng.randint(0, rx.amount.tokens))
                sx, sy = await shared.settle(rx, actual), await local.settle(ry, actual)
                assert (sx.counted, sx.reservation_found) == (sy.counted, sy.reservation_found)
            else:
                t[0] += rng.choice([1, 5, 20, 61, 400])
            if step % 25 == 0:
                rx_, ry_ = await shared.read([a, b]), await local.read([a, b])
                assert rx_.states == ry_.states, step
        await shared.close()

    asyncio.run(run())


def test_a_binding_refusal_is_remembered_a_too_large_one_is_not(redis_server):
    """Budget.status shows Exceeded while a window refuses: both ledgers stamp a refusal
    that a smaller window state would have admitted, never one too large for the window."""
    b = reject_budget(1.0, "refusals")
    key = (b.id, "1h")

    async def run() -> None:
        for led in (ledger(redis_server.url), InProcessLedger()):
            held = await led.reserve([b], Amount(0.8), ttl_s=30)
            assert held.admitted and (await led.read([b])).states[key].refused_at is None
            big = await led.reserve([b], Amount(2.0), ttl_s=30)
            assert big.reason == "too_large"
            assert (await led.read([b])).states[key].refused_at is None
            t0 = time.time()
            full = await led.reserve([b], Amount(0.5), ttl_s=30)
            assert full.reason == "limit"
            at = (await led.read([b])).states[key].refused_at
            assert at is not None and t0 - 1 <= at <= time.time() + 1, type(led)
            await led.settle(held.reservation, Amount(0.1))
            await led.close()

    asyncio.run(run())


def test_four_replicas_never_jointly_pass_the_limit(redis_server):
    bench = load_bench()
    out = bench.run_correctness(
        redis_server.url, procs=4, clients=16, limit=0.5, seconds=8, budget_id=uid("load")
    )
    assert out["admitted"] > 20 and out["rejects"] > 0, out
    assert out["overspend_usd"] == 0, out
    assert out["false_rejects"] == 0, out
    assert out["unaccounted_nano_usd"] == 0, out  # nothing lost, nothing counted twice
    assert out["final_spent_usd"] > 0.45, out  # and the limit was really reached


HOLDER = """
import asyncio, sys, time
from slmfleet.api.budget import SpendWindow
from slmfleet.budget.amounts import Amount
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings

async def main():
    b = BudgetLimits(sys.argv[2], (SpendWindow(window="1h", limit_usd=1.0, action="reject"),))
    led = RedisLedger(RedisSettings(url=sys.argv[1]))
    for _ in range(4):
        adm = await led.reserve([b], Amount(0.2), ttl_s=float(sys.argv[3]))
        assert adm.admitted
    print("held", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_killed_replica_reservations_expire_and_are_never_charged(redis_server, tmp_path):
    b = reject_budget(1.0)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), redis_server.url, b.id, "2.0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        s, r = asyncio.run(spent(redis_server.url, b))
        assert (s.usd, r.usd) == (0, pytest.approx(0.8))

        async def full_reserve():
            led = ledger(redis_server.url)
            adm = await led.reserve([b], Amount(0.5), ttl_s=30)
            await led.close()
            return adm

        assert not asyncio.run(full_reserve()).admitted  # 0.8 held + 0.5 > 1.0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while asyncio.run(spent(redis_server.url, b))[1].usd > 0:
            assert time.monotonic() < deadline, "reservations of the dead replica never expired"
            time.sleep(0.2)
        s, r = asyncio.run(spent(redis_server.url, b))
        assert (s.usd, r.usd) == (0, 0)  # released, not charged
        assert asyncio.run(full_reserve()).admitted
    finally:
        proc.kill()
        proc.wait()


def test_settle_after_expiry_and_retried_settle_count_once(redis_server):
    b = reject_budget(1.0)

    async def run():
        led = ledger(redis_server.url)
        adm = await led.reserve([b], Amount(0.4), ttl_s=0.3)
        await asyncio.sleep(0.6)
        assert (await led.read([b])).states[(b.id, "1h")].reserved.usd == 0
        first = await led.settle(adm.reservation, Amount(0.25))
        again = await led.settle(adm.reservation, Amount(0.25))
        await led.close()
        return first, again

    first, again = asyncio.run(run())
    assert first.counted and not first.reservation_found
    assert not again.counted
    s, r = asyncio.run(spent(redis_server.url, b))
    assert (s.usd, r.usd) == (pytest.approx(0.25), 0)


def test_redis_restart_mid_traffic_keeps_every_settled_amount(start_redis):
    """kill -9 of Redis mid-traffic, restart from its AOF: nothing settled is lost; what
    was settled while it was down is replayed once it is back."""
    server = start_redis()
    b = reject_budget(1000.0)

    async def run():
        led = ledger(server.url, timeout_s=0.2, retry_interval_s=0.2)
        total = 0
        queued = 0
        for i in range(300):
            if i == 100:
                server.kill()
            if i == 200:
                server.start()
            adm = await led.reserve([b], Amount(0.01), ttl_s=30)
            assert adm.admitted  # failOpen: served during the outage too
            actual = Amount(0.001 + (i % 7) * 0.001)
            s = await led.settle(adm.reservation, actual)
            total += actual.nano_usd
            queued += s.queued
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 10
        while led.pending:
            assert time.monotonic() < deadline, "spend counted during the outage not replayed"
            await led.flush()
            await asyncio.sleep(0.1)
        await led.close()
        return total, queued

    total, queued = asyncio.run(run())
    assert queued > 0  # the outage was real
    s, _ = asyncio.run(spent(server.url, b))
    assert s.nano_usd == total
    # And a clean restart (SIGTERM) keeps it too.
    server.stop()
    server.start()
    assert asyncio.run(spent(server.url, b))[0].nano_usd == total


def test_a_reservation_settled_during_an_outage_is_released_once_redis_is_back(start_redis):
    """Held in Redis, settled while Redis restarts: after the replay the spend is there
    once and the hold is gone at once (not only when it would have expired)."""
    server = start_redis()
    b = reject_budget(1.0, "orphan")

    async def run() -> None:
        led = ledger(server.url, timeout_s=0.2, retry_interval_s=0.2)
        adm = await led.reserve([b], Amount(0.6), ttl_s=600)
        assert adm.admitted and not adm.reservation.local
        await asyncio.to_thread(server.stop)  # the AOF keeps the hold
        s = await led.settle(adm.reservation, Amount(0.25))
        assert s.queued
        server.start()  # on this thread: redis-server dies with the thread that started it
        deadline = time.monotonic() + 10
        while led.pending:
            assert time.monotonic() < deadline, "not reconciled"
            await asyncio.sleep(0.25)
            await led.flush()
        again = await led.reserve([b], Amount(0.7), ttl_s=600)  # 0.25 + 0.7 fits now
        assert again.admitted, again
        await led.settle(again.reservation, Amount())
        await led.close()

    asyncio.run(run())
    spent_, reserved = asyncio.run(spent(server.url, b))
    assert spent_.usd == pytest.approx(0.25) and reserved.usd == 0


class ReplyDropper:
    """A TCP hop in front of the real Redis that, when told to, passes requests on and
    drops the replies: the network losing an answer after Redis acted on the request."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop = False
        self.delay = 0.0
        """Seconds each reply is held back (a slow network; Redis has acted already)."""
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if replies and self.drop:
                        continue
                    if replies and self.delay:
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))

    async def close(self) -> None:
        self.server.close()


def test_a_settle_redis_applied_but_never_answered_counts_once(redis_server):
    """The ambiguous failure: Redis runs the settle, its answer is lost on the way, the
    router times out and keeps the settle for replay. The replay (same id) must not
    count it again, and the hold is gone."""
    import redis as redis_client

    b = reject_budget(1.0, "ambiguous")

    async def run() -> None:
        hop = ReplyDropper(redis_server.port)
        await hop.start()
        led = ledger(f"redis://127.0.0.1:{hop.port}/0", timeout_s=0.2, retry_interval_s=0.2)
        warm = await led.reserve([reject_budget(1.0, "warm")], Amount(0.1), ttl_s=600)
        await led.settle(warm.reservation, Amount())  # both scripts loaded: EVALSHA runs
        adm = await led.reserve([b], Amount(0.5), ttl_s=600)
        hop.drop = True
        s = await led.settle(adm.reservation, Amount(0.3))
        hop.drop = False
        assert s.queued
        raw = redis_client.Redis(port=redis_server.port)
        assert raw.exists(f"{{slmfleet}}:s:{adm.reservation.id}")  # Redis did settle it
        raw.close()
        deadline = time.monotonic() + 10
        while led.pending:
            assert time.monotonic() < deadline, "not replayed"
            await asyncio.sleep(0.25)
            await led.flush()
        await led.close()
        await hop.close()

    asyncio.run(run())
    spent_, reserved = asyncio.run(spent(redis_server.url, b))
    assert spent_.usd == pytest.approx(0.3) and reserved.usd == 0


def test_a_reserve_redis_applied_but_never_answered_is_released(redis_server):
    """Redis takes the hold, its answer is lost, the router falls back: the hold is
    released by its id once Redis answers, not left to block the window until its TTL."""
    b = reject_budget(1.0, "lost-reserve")

    async def run() -> None:
        hop = ReplyDropper(redis_server.port)
        await hop.start()
        led = ledger(f"redis://127.0.0.1:{hop.port}/0", timeout_s=0.2, retry_interval_s=0.2)
        warm = await led.reserve([reject_budget(1.0, "warm")], Amount(0.1), ttl_s=600)
        await led.settle(warm.reservation, Amount())  # both scripts loaded: EVALSHA runs
        hop.drop = True
        adm = await led.reserve([b], Amount(0.5), ttl_s=600)
        hop.drop = False
        assert adm.admitted and adm.reservation.local  # fail open, on the local count
        assert (await spent(redis_server.url, b))[1].usd == pytest.approx(0.5)  # Redis holds it
        deadline = time.monotonic() + 10
        while led.pending:
            assert time.monotonic() < deadline, "not released"
            await asyncio.sleep(0.25)
            await led.flush()
        await led.settle(adm.reservation, Amount(0.2))
        await led.close()
        await hop.close()

    asyncio.run(run())
    spent_, reserved = asyncio.run(spent(redis_server.url, b))
    assert reserved.usd == 0 and spent_.usd == pytest.approx(0.2)


def test_a_reservation_whose_caller_left_is_released(redis_server):
    """The client leaves while the reserve is on its way: Redis takes the hold after the
    request is cancelled. The router's accounting runs the reserve to its end and
    releases the hold at once (before the fix it blocked the window until its TTL)."""
    from slmfleet.api.routerconfig import BudgetConfig
    from slmfleet.router.accounting import LedgerAccounting

    cfg = BudgetConfig.model_validate(
        {"id": uid("left"), "spend": [{"window": "1h", "limitUsd": 1.0, "action": "reject"}]}
    )
    b = BudgetLimits.from_config(cfg)

    async def run() -> None:
        hop = ReplyDropper(redis_server.port)
        await hop.start()
        acc = LedgerAccounting(ledger(f"redis://127.0.0.1:{hop.port}/0", timeout_s=1.0))
        warm = await acc.reserve([cfg], Amount(0.1), ttl_s=600, request_id="warm")
        await acc.settle(warm, Amount())
        await acc.drain()
        hop.delay = 0.3
        call = asyncio.ensure_future(acc.reserve([cfg], Amount(0.5), ttl_s=600, request_id="r"))
        await asyncio.sleep(0.1)  # the script is in Redis, its answer on the way
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await spent(redis_server.url, b))[1].usd == pytest.approx(0.5)
        await acc.drain()
        assert (await spent(redis_server.url, b))[1].usd == 0
        hop.delay = 0.0
        await acc.close()
        await hop.close()

    asyncio.run(run())


def test_unreachable_redis_applies_each_budgets_fail_mode():
    url = f"redis://127.0.0.1:{free_port()}/0"
    open_b, closed_b = reject_budget(1.0, "open"), reject_budget(1.0, "closed", "failClosed")

    async def run():
        led = ledger(url, timeout_s=0.2)
        t0 = time.monotonic()
        a = await led.reserve([open_b], Amount(0.1), ttl_s=5)
        c = await led.reserve([open_b, closed_b], Amount(0.1), ttl_s=5)
        s = await led.settle(a.reservation, Amount(0.05))
        read = await led.read([open_b])
        elapsed = time.monotonic() - t0
        await led.close()
        return a, c, s, read, elapsed

    a, c, s, read, elapsed = asyncio.run(run())
    assert a.admitted and not a.ledger_available
    assert not c.admitted and c.reason == "ledger_unavailable" and c.retry_after_s >= 1
    assert c.refused_by == (closed_b.id,)
    assert s.queued
    assert not read.available and read.error
    assert elapsed < 2.0


def test_fail_open_still_enforces_what_the_replica_knows(start_redis):
    server = start_redis()
    b = reject_budget(1.0)

    async def run():
        led = ledger(server.url, timeout_s=0.2, retry_interval_s=60)
        adm = await led.reserve([b], Amount(0.8), ttl_s=30)
        await led.settle(adm.reservation, Amount(0.8))
        server.kill()
        big = await led.reserve([b], Amount(0.3), ttl_s=30)
        small = await led.reserve([b], Amount(0.1), ttl_s=30)
        await led.settle(small.reservation, Amount(0.1))
        server.start()
        assert await led.flush() == 1
        await led.close()
        return big, small

    big, small = asyncio.run(run())
    assert not big.admitted and big.reason == "limit" and not big.ledger_available
    assert small.admitted and not small.ledger_available
    assert asyncio.run(spent(server.url, b))[0].usd == pytest.approx(0.9)


def test_fail_open_keeps_its_count_through_failed_probes(start_redis, caplog):
    """Redis down for many retry intervals: every failed probe keeps what this replica
    counted, so it never admits past the cap, and it warns once per outage."""
    server = start_redis()
    b = reject_budget(1.0, "outage")
    caplog.set_level(logging.DEBUG, logger="slmfleet.budget")

    async def run() -> int:
        led = ledger(server.url, timeout_s=0.2, retry_interval_s=0.2)
        adm = await led.reserve([b], Amount(0.4), ttl_s=30)
        await led.settle(adm.reservation, Amount(0.4))
        await asyncio.to_thread(server.kill)
        admitted = 0
        deadline = time.monotonic() + 1.6  # 8 retry intervals, each with a failed probe
        while time.monotonic() < deadline:
            adm = await led.reserve([b], Amount(0.3), ttl_s=30)
            assert not adm.ledger_available
            if adm.admitted:
                admitted += 1
                await led.settle(adm.reservation, Amount(0.3))
            await asyncio.sleep(0.05)
        server.start()
        deadline = time.monotonic() + 10
        while led.pending or not led.available:
            assert time.monotonic() < deadline, "never reconciled"
            await asyncio.sleep(0.1)
            await led.flush()
        await led.close()
        return admitted

    admitted = asyncio.run(run())
    assert admitted == 2  # 0.4 + 2 x 0.3 = 1.0: the cap, not past it
    assert "still unavailable" in caplog.text  # the probes did run, and failed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ledger unavailable" in warnings[0].getMessage()
    assert asyncio.run(spent(server.url, b))[0].usd == pytest.approx(1.0)


def test_requests_during_an_outage_wait_for_no_probe(start_redis):
    """Redis hung (SIGSTOP): once the first call has timed out, requests go straight to
    the fail mode; the retry probes run in the background, one at a time, and the ledger
    comes back by itself once Redis answers."""
    server = start_redis()
    b = reject_budget(1000.0, "hung")
    timeout_s = 0.6  # what a call to a hung Redis waits (the socket timeout)

    async def run() -> tuple[float, float, bool]:
        led = ledger(server.url, timeout_s=timeout_s, retry_interval_s=0.2)
        assert (await led.reserve([b], Amount(0.1), ttl_s=30)).ledger_available
        server.pause()
        try:
            t0 = time.monotonic()
            first = await led.reserve([b], Amount(0.1), ttl_s=30)
            detect = time.monotonic() - t0
            assert first.admitted and not first.ledger_available

            async def timed() -> float:
                t = time.monotonic()
                adm = await led.reserve([b], Amount(0.1), ttl_s=30)
                assert adm.admitted and not adm.ledger_available
                return time.monotonic() - t

            waits: list[float] = []
            deadline = time.monotonic() + 2.0  # several retry intervals and probes
            while time.monotonic() < deadline:
                waits += await asyncio.gather(*(timed() for _ in range(8)))
                await asyncio.sleep(0.05)
        finally:
            server.resume()
        deadline = time.monotonic() + 10
        back = False
        while not back and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            back = (await led.reserve([b], Amount(0.1), ttl_s=30)).ledger_available
        await led.close()
        return detect, max(waits), back

    detect, slowest, back = asyncio.run(run())
    assert detect >= timeout_s  # the call in flight did wait for Redis
    assert slowest < timeout_s / 3, slowest  # none after it did
    assert back


def test_hung_redis_times_out_into_the_fail_mode(start_redis):
    server = start_redis()
    b = reject_budget(1.0, mode="failClosed")

    async def run():
        led = ledger(server.url, timeout_s=0.2)
        assert (await led.reserve([b], Amount(0.1), ttl_s=5)).admitted
        server.pause()
        t0 = time.monotonic()
        adm = await led.reserve([b], Amount(0.1), ttl_s=5)
        elapsed = time.monotonic() - t0
        server.resume()
        await led.close()
        return adm, elapsed

    adm, elapsed = asyncio.run(run())
    assert not adm.admitted and adm.reason == "ledger_unavailable"
    assert elapsed < 1.5


def test_wrong_type_in_redis_is_a_fail_mode_not_a_crash(redis_server):
    import redis as redis_lib

    b = reject_budget(1.0, mode="failClosed")
    redis_lib.Redis.from_url(redis_server.url).set(f"{{slmfleet}}:w:{b.id}:1h", "garbage")

    async def run():
        led = ledger(redis_server.url)
        adm = await led.reserve([b], Amount(0.1), ttl_s=5)
        await led.close()
        return adm

    adm = asyncio.run(run())
    assert not adm.admitted and adm.reason == "ledger_unavailable"


class GarbageServer:
    """A TCP server answering every command with ``reply``: not Redis, or a broken one."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                while conn.recv(65536):
                    conn.sendall(self.reply)
            except OSError:
                pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"+OK\r\n",
        b":7\r\n",
        b"*2\r\n:1\r\n:9\r\n",
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x00\xff",
    ],
    ids=["status", "integer", "short-array", "http", "bytes"],
)
def test_garbage_replies_are_a_fail_mode_not_a_crash(reply):
    server = GarbageServer(reply)
    open_b, closed_b = reject_budget(1.0), reject_budget(1.0, "c", "failClosed")

    async def run():
        url = f"redis://127.0.0.1:{server.port}/0"
        out = []
        for b in (open_b, closed_b):  # a ledger each: both try the server
            led = ledger(url, timeout_s=0.2)
            out.append(await led.reserve([b], Amount(0.1), ttl_s=5))
            await led.close()
        return out

    try:
        a, c = asyncio.run(run())
    finally:
        server.close()
    assert a.admitted and not a.ledger_available
    assert not c.admitted and c.reason == "ledger_unavailable"


def test_tls_and_password(start_redis, tmp_path):
    ca_key, ca, key, csr, cert = (
        tmp_path / n for n in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt")
    )

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    server = start_redis(password="s3cret", tls=(cert, key, ca))
    b = reject_budget(1.0, mode="failClosed")

    async def run(**kw):
        led = ledger(server.url, timeout_s=1.0, **kw)
        adm = await led.reserve([b], Amount(0.1), ttl_s=5)
        await led.close()
        return adm

    assert asyncio.run(run(password="s3cret", ca_file=str(ca))).admitted
    # A certificate it cannot verify, or a wrong password: refused, not crashed.
    assert asyncio.run(run(password="s3cret")).reason == "ledger_unavailable"
    assert asyncio.run(run(password="wrong", ca_file=str(ca))).reason == "ledger_unavailable"
