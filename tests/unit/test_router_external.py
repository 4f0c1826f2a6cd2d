"""The external tier's client: the whole call, retry included, fits the tier's time."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from slmfleet.api.routerconfig import ExternalConfig as ExternalEndpoint
from slmfleet.router import errors as upstream
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.errors import UpstreamError
from slmfleet.router.external import ExternalClients


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
    assert e.value.timeout and time.monotonic() - t0 < 0.55
    await ext.close()
    assert upstream.RETRY_ATTEMPTS == 2  # without the bound, two attempts take 0.65 s
