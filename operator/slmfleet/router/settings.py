"""The router's own settings (limits, API keys, shared streams); ``__main__`` fills them
from its flags, whose defaults read the environment (the one place defaults live)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int = 2 * 1024 * 1024
    max_messages: int = 256
    api_keys: frozenset[str] | None = None
    """When set, /v1/* requires ``Authorization: Bearer <key>``."""
    shared_stream_max_tokens: int = 0
    """Non-streamed requests whose output is capped at this many tokens or fewer ride
    the Pod's few shared gRPC streams, where Triton cannot cancel them one by one; the
    rest have a stream to themselves while they run (kept for the next request when they
    end cleanly, see ``triton/exclusive``), so a client that leaves stops the generation
    in Triton too. Both cost the router the same CPU; sharing bounds the streams open
    to a Pod at 4. 0 (default): never share; -1: share every non-streamed request."""
    artifact_root: str | None = None
    """Where ``pvc://<claim>/<path>`` model artifacts of namespace ``<ns>`` are readable
    (``<root>/<ns>/<claim>/<path>``): an ONNX classifier's tokenizer and labels (see
    ``artifacts``). Unset: ONNX classifiers cannot be called."""


def load_api_keys(path: str | None = None, inline: str | None = None) -> frozenset[str] | None:
    """Keys from a file (one per line, where a Secret is mounted) and/or a comma list."""
    keys: set[str] = set()
    if path:
        keys |= {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()}
    if inline:
        keys |= {k.strip() for k in inline.split(",") if k.strip()}
    return frozenset(keys) if keys else None
