"""Reviewers: their own keys (never the client API keys), the queues they may see, and
the console's session cookie and CSRF tokens.

Keys are compared as SHA-256 digests (the file may hold only digests). A console
session is ``name.expiry.signature`` (HMAC-SHA256 under the session secret), so any
replica holding the same secret accepts it; a reviewer removed from the file loses
access at once (the name is looked up on every request). Forms carry a CSRF token
derived from the session; the cookie is HttpOnly and SameSite=Strict on top of that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .settings import ReviewerConfig

COOKIE = "slmfleet_review"


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str
    queues: frozenset[str] | None
    """None: every queue."""

    def may_see(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def visible(self, wanted: Iterable[str] | None) -> tuple[str, ...] | None:
        """The queues a listing may cover: ``wanted`` cut to the grant (None: all)."""
        if wanted is None:
            return None if self.queues is None else tuple(sorted(self.queues))
        return tuple(q for q in wanted if self.may_see(q))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ReviewerAuth:
    def __init__(
        self,
        reviewers: Sequence[ReviewerConfig],
        session_secret: bytes,
        *,
        session_ttl_s: float = 8 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._by_digest: dict[str, Reviewer] = {}
        self._by_name: dict[str, Reviewer] = {}
        for r in reviewers:
            who = Reviewer(r.name, None if "*" in r.queues else frozenset(r.queues))
            self._by_digest[r.key_sha256 or key_digest(r.key or "")] = who
            self._by_name[r.name] = who
        self._secret = session_secret
        self._ttl = session_ttl_s
        self._clock = clock

    @property
    def configured(self) -> bool:
        return bool(self._by_name)

    def by_key(self, key: str) -> Reviewer | None:
        if not key or len(key) > 512:
            return None
        return self._by_digest.get(key_digest(key))

    def from_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> Reviewer | None:
        """The reviewer named by ``Authorization: Bearer <reviewer key>``."""
        for k, v in headers:
            if k == b"authorization":
                token = v.decode("latin-1")
                if token[:7].lower() == "bearer ":
                    return self.by_key(token[7:].strip())
                return None
        return None

    # -- console sessions ----------------------------------------------------------------
    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def session(self, reviewer: Reviewer) -> str:
        expires = int(self._clock() + self._ttl)
        payload = f"{reviewer.name}.{expires}"
        raw = f"{payload}.{self._sign(payload)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def from_session(self, value: str | None) -> Reviewer | None:
        if not value or len(value) > 1024:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            name, expires, sig = raw.rsplit(".", 2)
            if not hmac.compare_digest(sig, self._sign(f"{name}.{expires}")):
                return None
            if int(expires) < self._clock():
                return None
        except (ValueError, UnicodeDecodeError):
            return None
        return self._by_name.get(name)

    def csrf(self, session_value: str) -> str:
        return self._sign(f"csrf:{session_value}")[:32]

    def check_csrf(self, session_value: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf(session_value), token or "")

    @property
    def ttl_s(self) -> float:
        return self._ttl


def cookie_value(headers: Iterable[tuple[bytes, bytes]], name: str = COOKIE) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.decode("latin-1").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name:
                    return value
    return None
