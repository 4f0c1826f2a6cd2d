"""External OpenAI-compatible endpoints (a larger hosted model as a cascade tier).

One pooled httpx client for every external endpoint; the API key comes by reference
(a Secret mounted as a file, or an environment variable), never from the config itself.
The whole call, retry included, fits in the time the tier has.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from ..api.base import SecretKeyRef
from ..api.policy import ExternalEndpoint
from .errors import RETRY_ATTEMPTS, RETRY_WAIT_S, UpstreamError

SECRETS_DIR_ENV = "SLMFLEET_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/run/secrets/slmfleet"
#: Sampling fields an external endpoint gets (the rest are Triton-specific).
FORWARDED = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


def secret_value(ref: SecretKeyRef) -> str | None:
    """An API key by reference: env ``SLMFLEET_SECRET_<NAME>_<KEY>`` (upper-cased,
    non-alphanumerics as ``_``), else the file ``$SLMFLEET_SECRETS_DIR/<name>/<key>``
    (where the chart mounts the Secret)."""
    env = "SLMFLEET_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()
    if os.environ.get(env):
        return os.environ[env]
    path = Path(os.environ.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR)) / ref.name / ref.key
    try:
        return path.read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ExternalAnswer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.retryable


class ExternalClients:
    """One pooled httpx client for every external endpoint."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def chat(
        self,
        ext: ExternalEndpoint,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None,
        sampling: Mapping[str, Any],
        timeout_s: float,
        request_id: str,
    ) -> ExternalAnswer:
        body: dict[str, Any] = {"model": ext.model, "messages": messages}
        body.update({k: v for k, v in sampling.items() if k in FORWARDED})
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"content-type": "application/json", "x-request-id": request_id}
        if ext.api_key is not None:
            key = secret_value(ext.api_key)
            if key:
                headers["authorization"] = f"Bearer {key}"
        url = ext.base_url.rstrip("/") + "/chat/completions"

        async def once() -> httpx.Response:
            try:
                return await self.client().post(
                    url, content=orjson.dumps(body), headers=headers, timeout=timeout_s
                )
            except httpx.ConnectError as exc:
                raise UpstreamError(f"external {url}: {exc}", retryable=True) from exc
            except httpx.TimeoutException as exc:
                raise UpstreamError(f"external {url}: timeout", timeout=True) from exc
            except httpx.HTTPError as exc:
                raise UpstreamError(f"external {url}: {exc}") from exc

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
        except TimeoutError as exc:
            raise UpstreamError(f"external {url}: timeout", timeout=True) from exc
        assert resp is not None
        if resp.status_code >= 400:
            raise UpstreamError(
                f"external {url}: HTTP {resp.status_code}: {resp.text[:200]}",
                timeout=resp.status_code == 504,
            )
        try:
            data = orjson.loads(resp.content)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"external {url}: malformed response") from exc
        use = data.get("usage") or {}
        return ExternalAnswer(
            text,
            use.get("prompt_tokens"),
            use.get("completion_tokens"),
            choice.get("finish_reason") or "stop",
        )
