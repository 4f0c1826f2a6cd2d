"""Settings of the decision log and the review queue, and the policy fields they add.

Two kinds of settings live here:

- per-policy settings (``ContentPolicy``, ``HumanAnswerPolicy``): the router
  configuration's types, set on RouterPolicy objects (``spec.decisionLog``, the human
  tier's answer mode) and rendered by the operator;
- per-process settings read from the environment (``DecisionLogSettings``,
  ``ReviewSettings``), which the chart sets.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..api.base import KubeModel
from ..api.routerconfig import DecisionLogConfig, HumanConfig

#: The per-policy settings are the router configuration's own types (RouterPolicy
#: ``spec.decisionLog`` and a human tier's ``mode``/``waitSeconds``/``onTimeout``/
#: ``message``, rendered into the router's config): one definition, here by their
#: telemetry names.
ContentPolicy = DecisionLogConfig
HumanAnswerPolicy = HumanConfig


class QueueConfig(KubeModel):
    """One review queue."""

    sla_seconds: int = Field(default=3600, ge=1, le=30 * 86400)
    """A case open longer than this breaches the queue's SLA (counted once, in metrics)."""
    escalate_to: str | None = Field(default=None, max_length=63)
    """Default queue the console's escalate button moves a case to."""
    webhook_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=2048)
    """Called (POST, JSON) with every resolution of this queue."""
    webhook_secret_file: str | None = None
    """File holding the key that signs webhook bodies (x-slmfleet-signature: sha256=HMAC)."""


class ReviewerConfig(KubeModel):
    """One reviewer: a name, a key of their own (not a client API key), granted queues."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9@._-]+$")
    key: str | None = Field(default=None, min_length=16, max_length=512)
    """The key itself (from a Secret), or ..."""
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """... its SHA-256 in hex, so the file never holds the key."""
    queues: list[str] = Field(min_length=1, max_length=256)
    """Queues this reviewer sees; ["*"] for all."""


@dataclass(frozen=True)
class DecisionLogSettings:
    """The decision writer and its store (env SLMFLEET_DECISION_*)."""

    store_url: str | None = None
    """sqlite:///path/to/file.db or postgresql://user@host:5432/db; None: log off."""
    password_file: str | None = None
    buffer_max: int = 10_000
    buffer_max_bytes: int = 64 * 1024 * 1024
    batch_max: int = 500
    flush_interval_s: float = 0.2
    retention_days: float = 30.0
    retention_max_rows: int = 1_000_000
    retention_interval_s: float = 60.0
    content: ContentPolicy = field(default_factory=ContentPolicy)
    hash_key: bytes = b""


@dataclass(frozen=True)
class ReviewSettings:
    """The review queue, its reviewers and console (env SLMFLEET_REVIEW_*)."""

    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    reviewers: tuple[ReviewerConfig, ...] = ()
    lease_s: float = 300.0
    max_wait_s: float = 120.0
    max_waiters: int = 256
    sweep_interval_s: float = 5.0
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_ttl_s: float = 8 * 3600.0
    public_url: str = ""
    """Base URL of the router as clients see it (case URLs); empty: relative URLs."""
    max_case_chars: int = 256 * 1024
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8


class SettingsError(ValueError):
    """A setting is malformed; the message names it."""


def _num(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def _read(path: str | None) -> bytes:
    return Path(path).read_bytes().strip() if path else b""


def decision_log_from_env(env: Mapping[str, str] = os.environ) -> DecisionLogSettings:
    try:
        content = ContentPolicy(
            content=env.get("SLMFLEET_DECISION_CONTENT", "off"),
            max_chars=int(env.get("SLMFLEET_DECISION_CONTENT_MAX_CHARS", "4096")),
        )
    except (ValidationError, ValueError) as exc:
        raise SettingsError(f"SLMFLEET_DECISION_CONTENT*: {exc}") from None
    return DecisionLogSettings(
        store_url=env.get("SLMFLEET_DECISION_STORE") or None,
        password_file=env.get("SLMFLEET_DECISION_STORE_PASSWORD_FILE") or None,
        buffer_max=int(_num(env, "SLMFLEET_DECISION_BUFFER", 10_000, int)),
        buffer_max_bytes=int(_num(env, "SLMFLEET_DECISION_BUFFER_BYTES", 64 << 20, int)),
        batch_max=max(1, int(_num(env, "SLMFLEET_DECISION_BATCH", 500, int))),
        flush_interval_s=_num(env, "SLMFLEET_DECISION_FLUSH_MS", 200) / 1000,
        retention_days=_num(env, "SLMFLEET_DECISION_RETENTION_DAYS", 30),
        retention_max_rows=int(_num(env, "SLMFLEET_DECISION_MAX_ROWS", 1_000_000, int)),
        content=content,
        hash_key=_read(env.get("SLMFLEET_DECISION_HASH_KEY_FILE")),
    )


def load_queues(path: str | None) -> dict[str, QueueConfig]:
    """``{queue: {slaSeconds, escalateTo, webhookUrl, webhookSecretFile}}`` (YAML/JSON)."""
    if not path:
        return {}
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a map of queue name to settings")
    try:
        return {str(k): QueueConfig.model_validate(v or {}) for k, v in raw.items()}
    except ValidationError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def load_reviewers(path: str | None) -> tuple[ReviewerConfig, ...]:
    """``[{name, key | keySha256, queues}]`` (YAML/JSON), usually a mounted Secret."""
    if not path:
        return ()
    raw = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(raw, list):
        raise SettingsError(f"{path}: expected a list of reviewers")
    try:
        out = tuple(ReviewerConfig.model_validate(r) for r in raw)
    except ValidationError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    for r in out:
        if (r.key is None) == (r.key_sha256 is None):
            raise SettingsError(f"{path}: reviewer {r.name}: set exactly one of key, keySha256")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise SettingsError(f"{path}: reviewer names must be unique")
    return out


def review_from_env(env: Mapping[str, str] = os.environ) -> ReviewSettings:
    secret = _read(env.get("SLMFLEET_REVIEW_SESSION_SECRET_FILE"))
    kw = {"session_secret": secret} if secret else {}
    return ReviewSettings(
        queues=load_queues(env.get("SLMFLEET_REVIEW_QUEUES_FILE")),
        reviewers=load_reviewers(env.get("SLMFLEET_REVIEWERS_FILE")),
        lease_s=_num(env, "SLMFLEET_REVIEW_LEASE_S", 300),
        max_wait_s=_num(env, "SLMFLEET_REVIEW_MAX_WAIT_S", 120),
        public_url=env.get("SLMFLEET_PUBLIC_URL", "").rstrip("/"),
        **kw,
    )
