"""Triton's model repository API over HTTP: what is loaded, load, unload.

The operator drives a pool's servers with it (``--model-control-mode=explicit``): adding,
changing or removing a member never restarts the server. Endpoints (Triton's
``model_repository`` extension): ``POST v2/repository/index`` lists the models found in
the repository with their state; ``POST v2/repository/models/<m>/load`` loads (or, for a
loaded model whose files changed, reloads) one; ``.../unload`` unloads it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from ..clients.bounded import TooLarge, read_capped

#: Loading a model may fetch nothing (the sidecar did) but still builds an engine.
LOAD_TIMEOUT_S = 600.0
INDEX_TIMEOUT_S = 10.0
#: Largest answer read from a pool's server: an index of hundreds of models is a few
#: KiB, and the server runs the tenant's image.
MAX_ANSWER_BYTES = 1 << 20


class RepositoryError(RuntimeError):
    """Triton refused a repository request, or could not be reached; says which."""


@dataclass(frozen=True)
class Entry:
    name: str
    state: str
    """READY, LOADING, UNLOADING, UNAVAILABLE, or "" (found but never loaded)."""
    reason: str = ""


def _path(model: str, action: str) -> str:
    return f"/v2/repository/models/{quote(model, safe='')}/{action}"


class Repository:
    """One Triton server's repository API (``base`` is its HTTP address)."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base.rstrip("/")
        self.session = session

    async def _post(self, path: str, body: dict[str, Any], timeout_s: float) -> Any:
        url = self.base + path
        try:
            async with self.session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                try:
                    raw = await read_capped(r, MAX_ANSWER_BYTES)
                except TooLarge as exc:
                    raise RepositoryError(f"{url}: {exc}") from None
                text = raw.decode("utf-8", errors="replace")
                if r.status != 200:
                    with contextlib.suppress(ValueError, AttributeError):
                        text = json.loads(text).get("error", text)
                    raise RepositoryError(f"{url}: HTTP {r.status}: {text}")
                return json.loads(text) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RepositoryError(f"{url}: {type(exc).__name__}: {exc}") from exc

    async def index(self) -> dict[str, Entry]:
        """Every model the repository holds, by name (a member the sidecar has not laid
        out yet is absent)."""
        rows = await self._post("/v2/repository/index", {}, INDEX_TIMEOUT_S) or []
        return {r["name"]: Entry(r["name"], r.get("state", ""), r.get("reason", "")) for r in rows}

    async def load(self, model: str) -> None:
        await self._post(_path(model, "load"), {}, LOAD_TIMEOUT_S)

    async def unload(self, model: str) -> None:
        await self._post(_path(model, "unload"), {}, INDEX_TIMEOUT_S * 6)
