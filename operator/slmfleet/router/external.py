"""External OpenAI-compatible endpoints (a larger hosted model as a cascade tier).

One pooled httpx client for every external endpoint. Every call passes the egress policy
(allow-listed hosts, https, addresses checked at connect time: ``egress``) and takes its
API key from the Secret resolver (the policy's own namespace only: ``secrets``). Errors
never carry the URL, the upstream's body or the key. The whole call, retry included,
fits in the time the tier has. A timeout says whether the request was sent at all
(``UpstreamError.timeout`` only when it was: the endpoint may have generated and billed
it; a connection not made in time is a plain failure, charged nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from ..api.routerconfig import ExternalConfig as ExternalEndpoint
from . import egress, secrets
from .errors import RETRY_ATTEMPTS, RETRY_WAIT_S, UpstreamError

log = logging.getLogger("slmfleet.router")
#: Sampling fields an external endpoint gets (the rest are Triton-specific).
FORWARDED = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class ExternalAnswer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str
    reasoning_tokens: int | None = None
    """``usage.completion_tokens_details.reasoning_tokens`` (part of completion_tokens)."""


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.retryable


class ExternalClients:
    """One pooled httpx client for every external endpoint.

    Every call passes the egress policy (``egress``: allow-listed hosts, https, checked
    addresses at connect time) and takes its API key from the Secret resolver
    (``secrets``: the policy's own namespace only). A key that cannot be read fails the
    tier; the call is never made without it. Errors name the tier's fault, never the
    URL, the upstream's body or the key: they reach callers and logs.
    """

    def __init__(
        self,
        *,
        egress_policy: egress.EgressPolicy | None = None,
        secret_resolver: secrets.SecretResolver | None = None,
    ) -> None:
        self.egress = egress_policy or egress.EgressPolicy()
        self.secrets = secret_resolver or secrets.NoSecrets()
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = egress.client(self.egress)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.secrets.close()

    async def chat(
        self,
        ext: ExternalEndpoint,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None,
        sampling: Mapping[str, Any],
        timeout_s: float,
        request_id: str,
        trace_headers: Mapping[str, str] | None = None,
    ) -> ExternalAnswer:
        """``trace_headers``: the W3C trace context of the hop (``traceparent``, ...)."""
        body: dict[str, Any] = {"model": ext.model, "messages": messages}
        body.update({k: v for k, v in sampling.items() if k in FORWARDED})
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {
            **(trace_headers or {}),
            "content-type": "application/json",
            "x-request-id": request_id,
        }
        url = ext.base_url.rstrip("/") + "/chat/completions"
        try:
            self.egress.check_url(url)
        except egress.EgressDenied as exc:
            raise UpstreamError(f"external tier: {exc}", public=f"external tier: {exc}") from None
        if ext.api_key is not None:
            try:
                key = await self.secrets.get(secrets.of(ext.api_key))
            except secrets.SecretUnavailable as exc:
                log.warning("external tier API key unavailable: %s", exc.reason)
                msg = f"external tier: API key unavailable ({exc.reason})"
                raise UpstreamError(msg, public=msg) from None
            headers["authorization"] = f"Bearer {key}"

        sent = False  # whether a request reached the wire (else nothing can be billed)

        async def trace(event: str, _info: Any) -> None:
            nonlocal sent
            if event.endswith("send_request_headers.started"):  # http11. / http2.
                sent = True

        def unsent() -> UpstreamError:
            # No connection in time: the request never left, the endpoint generated
            # nothing; not a timeout of the endpoint's answer (that one is charged).
            msg = "external tier: connection timed out"
            return UpstreamError(msg, public=msg)

        async def once() -> httpx.Response:
            try:
                return await self.client().post(
                    url,
                    content=orjson.dumps(body),
                    headers=headers,
                    timeout=timeout_s,
                    extensions={"trace": trace},
                )
            except httpx.ConnectError as exc:
                denied = "not allowed" in str(exc)
                reason = str(exc) if denied else "connection failed"
                msg = f"external tier: {reason}"
                raise UpstreamError(msg, retryable=not denied, public=msg) from None
            except (httpx.ConnectTimeout, httpx.PoolTimeout):
                raise unsent() from None
            except httpx.TimeoutException:
                raise UpstreamError("external tier: timeout", timeout=True) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(f"external tier: {type(exc).__name__}") from None

        resp = None
        # httpx's timeout is per phase (connect, read, ...) and a retry starts afresh:
        # the whole call, retry included, must fit in the time the tier has.
        try:
            async with asyncio.timeout(timeout_s):
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(RETRY_ATTEMPTS),
                    wait=wait_fixed(RETRY_WAIT_S),
                    retry=retry_if_exception(_is_retryable),
                    reraise=True,
                ):
                    with attempt:
                        resp = await once()
        except TimeoutError:
            if not sent:
                raise unsent() from None
            raise UpstreamError("external tier: timeout", timeout=True) from None
        assert resp is not None
        if resp.status_code >= 400:
            # The upstream's body may echo the request or the key: never passed on.
            msg = f"external tier: HTTP {resp.status_code}"
            raise UpstreamError(msg, timeout=resp.status_code == 504, public=msg)
        try:
            data = orjson.loads(resp.content)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError("external tier: malformed response") from None
        use = data.get("usage")
        use = use if isinstance(use, dict) else {}
        details = use.get("completion_tokens_details")
        details = details if isinstance(details, dict) else {}
        return ExternalAnswer(
            text,
            _count(use.get("prompt_tokens")),
            _count(use.get("completion_tokens")),
            choice.get("finish_reason") or "stop",
            _count(details.get("reasoning_tokens")),
        )


def _count(value: Any) -> int | None:
    """A token count from an endpoint's ``usage``; anything but a count is no count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
