"""OpenAI-style errors: every failure the client sees has a status, a type and a code."""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, code: str = "invalid_request", param: str | None = None):
    return RouterError(400, message, code=code, param=param)


def unknown_model(model: str) -> RouterError:
    return RouterError(
        404,
        f"The model {model!r} does not exist",
        code="model_not_found",
        param="model",
    )


#: What callers are told of an upstream failure, by reason: the message itself names
#: internal endpoints (Service names, ports) that are nobody's business outside.
PUBLIC_REASONS = {
    "error": "the upstream failed",
    "timeout": "the upstream timed out",
    "circuit_open": "the upstream is unavailable (circuit open)",
    "unready": "the specialist is not ready",
    "no_replica": "no replica of the specialist became ready in time (it is starting)",
    "context_length_exceeded": "the prompt does not fit the model's context",
}


class UpstreamError(Exception):
    """A tier failed: ``timeout`` tells a deadline from other failures (504 vs 502)."""

    def __init__(
        self,
        message: str,
        *,
        timeout: bool = False,
        retryable: bool = False,
        reason: str = "error",
        public: str | None = None,
    ):
        super().__init__(message)
        self.timeout = timeout
        self.retryable = retryable
        self.reason = "timeout" if timeout else reason
        """Escalation reason: error | timeout | circuit_open | unready | no_replica |
        context_length_exceeded (the prompt alone fills the model's context)."""
        self.public = public
        """A message safe to show callers (no URL, endpoint, body or key), when set."""

    @property
    def public_message(self) -> str:
        return self.public or PUBLIC_REASONS.get(self.reason, PUBLIC_REASONS["error"])


#: Upstream calls are retried only when nothing was generated yet (a refused or dropped
#: connection before the first response); one retry, after a short pause.
RETRY_ATTEMPTS = 2
RETRY_WAIT_S = 0.05
