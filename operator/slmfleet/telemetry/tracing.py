"""OpenTelemetry traces: a span per request, one per cascade hop.

Off by default. On when ``OTEL_TRACES_EXPORTER=otlp`` (or ``console``), or when an
OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``..._TRACES_ENDPOINT``);
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off. The protocol
is ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` (``http/protobuf``, the default, or
``grpc``); the exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables (headers,
timeout, certificates), the SDK ``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_BSP_*``,
``OTEL_SERVICE_NAME`` (default ``slmfleet-router``), ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_PROPAGATORS`` (default W3C tracecontext + baggage).

When off, the SDK is not even imported and every call returns a shared no-op object:
the cost is a method call (measured in benchmarks/results/decision_log.md).

Use (the router)::

    with tracing.request(scope["headers"], model=req.model, request_id=rid) as rs:
        with rs.hop("small", target="shop/billing", kind="specialist") as hop:
            ...                         # inside: tracing.inject(headers) for outgoing calls
            hop.usage(input_tokens=12, output_tokens=30)
            hop.escalated(["label_threshold:refund"])
        rs.finish(record)               # attributes from the DecisionRecord

Attributes follow the GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.response.finish_reasons``)
plus ``slmfleet.*`` (policy, route, tier, escalation reason, cost, truncated).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from .record import DecisionRecord

SERVICE = "slmfleet-router"


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def tracing_wanted(env: Mapping[str, str]) -> str | None:
    """The exporter to use (``otlp`` or ``console``), or None: tracing stays off."""
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    exporters = [
        e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()
    ]
    if "none" in exporters:
        return None
    if "otlp" in exporters:
        return "otlp"
    if "console" in exporters:
        return "console"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


class _Noop:
    """Every span operation when tracing is off: one shared object, no allocation."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hop(self, *args: Any, **kw: Any) -> _Noop:
        return self

    def finish(self, *args: Any, **kw: Any) -> None:
        return None

    def usage(self, *args: Any, **kw: Any) -> None:
        return None

    def escalated(self, *args: Any, **kw: Any) -> None:
        return None

    def failed(self, *args: Any, **kw: Any) -> None:
        return None

    def set(self, *args: Any, **kw: Any) -> None:
        return None

    def inject(self, *args: Any, **kw: Any) -> None:
        return None

    def end(self) -> None:
        return None


NOOP = _Noop()


class Tracing:
    """Holds the tracer provider when on; ``enabled`` False: everything is ``NOOP``."""

    def __init__(self, provider: Any = None, service: str = SERVICE) -> None:
        self.enabled = provider is not None
        self._provider = provider
        if provider is not None:
            from opentelemetry import context, propagate, trace

            self._tracer = provider.get_tracer("slmfleet.router")
            self._trace = trace
            self._context = context
            self._propagate = propagate

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Tracing:
        kind = tracing_wanted(env)
        if kind is None:
            return cls.disabled()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        service = env.get("OTEL_SERVICE_NAME") or SERVICE
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(_exporter(kind, env)))
        return cls(provider, service)

    def request(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        model: str,
        request_id: str,
        operation: str = "chat",
    ) -> Any:
        """The request's span (SERVER), child of the caller's ``traceparent`` if any."""
        if not self.enabled:
            return NOOP
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        parent = self._propagate.extract(carrier)
        span = self._tracer.start_span(
            f"{operation} {model}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": model,
                "slmfleet.request_id": request_id,
            },
        )
        return _RequestSpan(self, span, self._trace.set_span_in_context(span, parent), operation)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add ``traceparent`` (and baggage) of the current span to outgoing headers."""
        if self.enabled:
            self._propagate.inject(headers)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def _exporter(kind: str, env: Mapping[str, str]) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        target = endpoint or base
        insecure = target is not None and target.startswith("http://")
        return OTLPSpanExporter(endpoint=target, insecure=insecure or None)
    if protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint is None and base:
        endpoint = base.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


class _RequestSpan:
    def __init__(self, tracing: Tracing, span: Any, ctx: Any, operation: str) -> None:
        self.t = tracing
        self.span = span
        self.ctx = ctx
        self.operation = operation
        self._token: Any = None
        self._ended = False

    def __enter__(self) -> _RequestSpan:
        self._token = self.t._context.attach(self.ctx)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and not self._ended:
            self.span.record_exception(exc)
            self.span.set_status(self.t._trace.Status(self.t._trace.StatusCode.ERROR, str(exc)))
        if self._token is not None:
            self.t._context.detach(self._token)
            self._token = None
        self.end()

    def hop(
        self,
        tier: str,
        *,
        target: str,
        kind: str = "specialist",
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> _HopSpan:
        """One cascade hop (CLIENT for model calls, INTERNAL for human review)."""
        provider = {"specialist": "triton", "external": "openai", "human": "human"}.get(kind, kind)
        attrs: dict[str, Any] = {
            "slmfleet.tier": tier,
            "slmfleet.tier.kind": kind,
            "slmfleet.target": target,
        }
        if kind == "human":
            name = f"review {target}"
            span_kind = self.t._trace.SpanKind.INTERNAL
        else:
            name = f"{self.operation} {model or target}"
            span_kind = self.t._trace.SpanKind.CLIENT
            attrs["gen_ai.operation.name"] = self.operation
            attrs["gen_ai.provider.name"] = provider
            attrs["gen_ai.request.model"] = model or target
            if max_tokens is not None:
                attrs["gen_ai.request.max_tokens"] = max_tokens
        span = self.t._tracer.start_span(name, context=self.ctx, kind=span_kind, attributes=attrs)
        return _HopSpan(self.t, span)

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def finish(self, record: DecisionRecord | None = None, **attrs: Any) -> None:
        """Set the request's attributes from its decision record (and ``attrs``)."""
        s = self.span
        if record is not None:
            values: dict[str, Any] = {
                "slmfleet.policy": record.policy,
                "slmfleet.route.source": record.route_source,
                "slmfleet.route.confidence": record.routing_confidence,
                "slmfleet.accepted": record.accepted,
                "slmfleet.truncated": record.truncated,
                "slmfleet.cost_usd": record.cost_usd,
                "slmfleet.degraded": record.degraded,
                "gen_ai.usage.input_tokens": record.prompt_tokens,
                "gen_ai.usage.output_tokens": record.completion_tokens,
                "slmfleet.usage.reasoning_tokens": record.reasoning_tokens,
                "http.response.status_code": record.status,
            }
            optional = {
                "slmfleet.route": record.route,
                "slmfleet.tier": record.tier,
                "slmfleet.target": record.target,
                "gen_ai.response.model": record.target,
                "slmfleet.review.queue": record.review_queue,
                "slmfleet.review.case_id": record.case_id,
            }
            values.update({k: v for k, v in optional.items() if v is not None})
            escalations = [f"{a.tier}:{r}" for a in record.attempts for r in a.reasons]
            if escalations:
                values["slmfleet.escalations"] = escalations
            if record.budget_exceeded:
                values["slmfleet.budget.exceeded"] = list(record.budget_exceeded)
            s.set_attributes(values)
            if record.status >= 500:
                s.set_attribute("error.type", str(record.status))
                s.set_status(self.t._trace.Status(self.t._trace.StatusCode.ERROR, record.error))
        if attrs:
            s.set_attributes(attrs)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self.span.end()


class _HopSpan:
    def __init__(self, tracing: Tracing, span: Any) -> None:
        self.t = tracing
        self.span = span
        self._token: Any = None

    def __enter__(self) -> _HopSpan:
        self._token = self.t._context.attach(self.t._trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.failed(exc)
        if self._token is not None:
            self.t._context.detach(self._token)
        self.span.end()

    def usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        cost_usd: float | None = None,
        finish_reason: str | None = None,
        truncated: bool | None = None,
    ) -> None:
        values = {
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "slmfleet.usage.reasoning_tokens": reasoning_tokens,
            "slmfleet.cost_usd": cost_usd,
            "slmfleet.truncated": truncated,
        }
        self.span.set_attributes({k: v for k, v in values.items() if v is not None})
        if finish_reason is not None:
            self.span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])

    def escalated(self, reasons: Sequence[str]) -> None:
        """The hop's answer (or call) did not stand: the cascade goes on, for ``reasons``."""
        self.span.set_attribute("slmfleet.outcome", "escalated")
        self.span.set_attribute("slmfleet.escalation.reason", ",".join(reasons))
        for r in reasons:
            self.span.add_event("slmfleet.escalation", {"slmfleet.escalation.reason": r})

    def failed(self, error: BaseException | str) -> None:
        self.span.set_attribute(
            "error.type", type(error).__name__ if not isinstance(error, str) else error
        )
        self.span.set_status(self.t._trace.Status(self.t._trace.StatusCode.ERROR, str(error)))

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add this hop's W3C ``traceparent`` (and baggage) to an outgoing call's
        headers: the called endpoint continues the trace under this hop."""
        ctx = self.t._trace.set_span_in_context(self.span)
        self.t._propagate.inject(headers, context=ctx)

    def end(self) -> None:
        """End the span (a hop closed without ``with``)."""
        self.span.end()
