"""The external tier's client: the whole call, retry included, fits the tier's time; a
call whose outcome is unknown is charged, and recorded, its worst case; one that never
left nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from slmfleet.api.routerconfig import ExternalConfig as ExternalEndpoint
from slmfleet.router import errors as upstream
from slmfleet.router import metrics as m
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.engine import Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from tests.unit.router_fakes import FakePool, held, run, spent
from tests.unit.test_router_spend_ladder import external_snapshot


async def test_external_call_with_retry_is_bounded_by_the_timeout():
    async def handler(request):
        await asyncio.sleep(0.3)
        raise httpx.ConnectError("refused", request=request)

    # The egress allow-list admits this host over http; the mock stands for the network.
    ext = ExternalClients(egress_policy=EgressPolicy.parse(["ext"], allow_http=True))
    ext._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    endpoint = ExternalEndpoint.model_validate({"baseUrl": "http://ext/v1", "model": "gpt"})
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as e:
        await ext.chat(endpoint, [], max_tokens=None, sampling={}, timeout_s=0.4, request_id="r")
    # Never connected: nothing was sent, so it is no timeout of the endpoint's answer.
    assert not e.value.timeout and time.monotonic() - t0 < 0.55
    assert str(e.value) == "external tier: connection timed out"
    await ext.close()
    assert upstream.RETRY_ATTEMPTS == 2  # without the bound, two attempts take 0.65 s


# ---- what an unknown outcome is charged, on a real local HTTP server ---------------------


def external_engine(base_url: str) -> tuple[Any, Engine]:
    """A policy whose only tier is an external endpoint at ``base_url`` (loopback, http
    allowed explicitly), under a spend window and an 8-token output cap."""
    egress = EgressPolicy.parse(["127.0.0.1"], ["127.0.0.1/32"], allow_http=True)
    return external_snapshot(base_url), Engine(FakePool({}), ExternalClients(egress_policy=egress))


def cost_metric() -> float:
    return m.COST.labels("ext", "external")._value.get()


async def test_an_answer_that_never_comes_is_recorded_as_charged():
    """The request reached the endpoint, which never answered: the ledger, the Decision,
    the attempt and the cost metric all say the worst case."""
    got = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        got.set()
        try:
            await reader.read()  # until the client gives up and closes
        finally:
            writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    snap, eng = external_engine(f"http://127.0.0.1:{port}/v1")
    before = cost_metric()
    try:
        with pytest.raises(RouterError) as e:
            await run(eng, snap, "hello", "ext")
    finally:
        await eng.external_tier.clients.close()
        server.close()
        await server.wait_closed()
    assert got.is_set() and e.value.status == 504
    d = e.value.decision
    bound = 5 + 8 + 16  # the message's bytes, its template tokens, special tokens
    worst = (bound * 3 + 8 * 6) / 1e6
    assert spent(eng, "ns/cash") == pytest.approx(worst) == pytest.approx(d.cost_usd)
    assert (d.prompt_tokens, d.completion_tokens) == (bound, 8)
    assert [a.cost_usd for a in d.attempts] == [pytest.approx(worst)]
    assert cost_metric() - before == pytest.approx(worst)


async def test_a_connection_never_made_costs_nothing():
    """The endpoint's accept queue is full (a real listening socket nobody accepts on):
    the connection is never made, the request never sent, nothing is charged."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the queue: SYNs drop now
    snap, eng = external_engine(f"http://127.0.0.1:{port}/v1")
    before = cost_metric()
    try:
        with pytest.raises(RouterError) as e:
            await run(eng, snap, "hello", "ext")
    finally:
        await eng.external_tier.clients.close()
        filler.close()
        srv.close()
    assert e.value.status == 502 and "connection timed out" in e.value.message
    d = e.value.decision
    assert spent(eng, "ns/cash") == 0.0 == d.cost_usd and held(eng, "ns/cash") == 0.0
    assert (d.prompt_tokens, d.completion_tokens) == (0, 0)
    assert cost_metric() == before
