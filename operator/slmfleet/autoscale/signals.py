"""Prometheus text from the router Pods and Triton -> per-specialist ``Signals``, pure.

A scrape is reduced at once to the few series the autoscaler reads (``Sample``); a
trailing window of samples per source becomes rates, averages and a p95 the way
Prometheus' ``rate`` and ``histogram_quantile`` would compute them: per source first
(a restarted router resets its counters, which counts as a reset, not a negative rate),
then summed over sources (several router replicas, several Triton Pods).

What is read (``MetricNames``; the router's names live in router/metrics.py, and a unit
test holds the two together):
- router, per specialist id: the upstream latency histogram (rate, p95, mean service
  time, and in-flight by Little's law: the growth of its sum over time), the in-flight
  gauge (requests waiting for a replica included; in-flight is the larger of the two
  estimates), the waiting-for-a-replica gauge and
  the counter of requests that found no replica (cascaded or gave up: demand);
- router, per (policy, tier): requests escalated into the tier (once per request),
  mapped to the specialist the tier names by ``escalation_feeds``;
- Triton, per model: completed requests, cumulative queue time and pending requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..api.routerconfig import PolicyConfig
from .decide import Signals


@dataclass(frozen=True)
class MetricNames:
    """Sample names read from the scrapes (the router's must match router/metrics.py)."""

    upstream: str = "slmfleet_router_upstream_duration_seconds"
    escalations: str = "slmfleet_router_escalated_requests_total"
    in_flight: str = "slmfleet_router_inflight_requests"
    waiting: str = "slmfleet_router_waiting_requests"
    unavailable: str = "slmfleet_router_no_replica_total"
    triton_success: str = "nv_inference_request_success"
    triton_queue_us: str = "nv_inference_queue_duration_us"
    triton_pending: str = "nv_inference_pending_request_count"


NAMES = MetricNames()


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound -> count), count and sum."""

    buckets: tuple[tuple[float, float], ...] = ()
    count: float = 0.0
    total: float = 0.0


@dataclass
class Sample:
    """One scrape of one source, reduced to what the autoscaler reads."""

    at: float
    upstream: dict[str, Histogram] = field(default_factory=dict)
    escalations: dict[tuple[str, str], float] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, float] = field(default_factory=dict)
    triton_success: dict[str, float] = field(default_factory=dict)
    triton_queue_us: dict[str, float] = field(default_factory=dict)
    triton_pending: dict[str, float] = field(default_factory=dict)


def _add(table: dict, key: object, value: float) -> None:
    table[key] = table.get(key, 0.0) + value


def _bare(name: str) -> str:
    return name.removesuffix("_total")


def parse(text: str, at: float, names: MetricNames = NAMES) -> Sample:
    """Reduce one Prometheus text exposition. Raises ValueError on malformed text."""
    sample = Sample(at)
    buckets: dict[str, dict[float, float]] = {}
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    # Counters are matched without "_total": the parser adds it to Triton's counters,
    # which are exposed without it.
    bare = _bare
    escalations = bare(names.escalations)
    simple = {
        bare(names.in_flight): sample.in_flight,
        bare(names.waiting): sample.waiting,
        bare(names.unavailable): sample.unavailable,
    }
    triton = {
        bare(names.triton_success): sample.triton_success,
        bare(names.triton_queue_us): sample.triton_queue_us,
        bare(names.triton_pending): sample.triton_pending,
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = bare(s.name), s.labels, float(s.value)
            if not math.isfinite(value):
                raise ValueError(f"{name}{labels} is {value}")
            if name.startswith(names.upstream) and "specialist" in labels:
                sid = labels["specialist"]
                suffix = name[len(names.upstream) :]
                if suffix == "_bucket":
                    le = float(labels["le"])  # "+Inf" parses to inf
                    _add(buckets.setdefault(sid, {}), le, value)
                elif suffix == "_count":
                    _add(counts, sid, value)
                elif suffix == "_sum":
                    _add(sums, sid, value)
            elif name == escalations:
                _add(sample.escalations, (labels.get("policy", ""), labels.get("tier", "")), value)
            elif name in simple and "specialist" in labels:
                _add(simple[name], labels["specialist"], value)
            elif name in triton and "model" in labels:
                _add(triton[name], labels["model"], value)
    for sid in counts.keys() | buckets.keys():
        sample.upstream[sid] = Histogram(
            tuple(sorted(buckets.get(sid, {}).items())), counts.get(sid, 0.0), sums.get(sid, 0.0)
        )
    return sample


def _delta(new: float, old: float) -> float:
    """Counter increase; a value below the old one is a reset (the source restarted)."""
    return new if new < old else new - old


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative (upper bound, count) pairs: linear within
    the bucket; in the +Inf bucket, the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class SourceWindow:
    """One source's increases over its part of the window."""

    span: float
    upstream: dict[str, Histogram]
    escalations: dict[tuple[str, str], float]
    unavailable: dict[str, float]
    triton_success: dict[str, float]
    triton_queue_us: dict[str, float]
    gauges: dict[str, dict[str, float]]  # name -> key -> mean over the window's samples


def source_window(samples: Sequence[Sample], window_s: float) -> SourceWindow | None:
    """Increases between the newest sample and the newest one at least ``window_s`` older
    (or the oldest held); None with fewer than two samples."""
    if len(samples) < 2:
        return None
    new = samples[-1]
    base = samples[0]
    for s in samples[:-1]:
        if s.at <= new.at - window_s:
            base = s
    span = new.at - base.at
    if span <= 0:
        return None
    used = [s for s in samples if s.at >= base.at]

    # A series missing from the base sample was born since (client libraries create a
    # labelled series at its first increment, from zero): its whole value is the increase.
    def deltas(new_t: Mapping, old_t: Mapping) -> dict:
        return {k: _delta(v, old_t.get(k, 0.0)) for k, v in new_t.items()}

    upstream = {}
    for sid, h in new.upstream.items():
        old = base.upstream.get(sid) or Histogram()
        if h.count < old.count:  # the source restarted: count from zero
            old = Histogram()
        olds = dict(old.buckets)
        upstream[sid] = Histogram(
            tuple((le, c - olds.get(le, 0.0)) for le, c in h.buckets),
            h.count - old.count,
            h.total - old.total,
        )
    gauges = {}
    for name in ("in_flight", "waiting", "triton_pending"):
        keys = {k for s in used for k in getattr(s, name)}
        gauges[name] = {
            k: sum(getattr(s, name).get(k, 0.0) for s in used) / len(used) for k in keys
        }
    return SourceWindow(
        span=span,
        upstream=upstream,
        escalations=deltas(new.escalations, base.escalations),
        unavailable=deltas(new.unavailable, base.unavailable),
        triton_success=deltas(new.triton_success, base.triton_success),
        triton_queue_us=deltas(new.triton_queue_us, base.triton_queue_us),
        gauges=gauges,
    )


def escalation_feeds(policies: Iterable[PolicyConfig]) -> dict[str, list[tuple[str, str]]]:
    """Specialist id -> the (policy model name, tier) pairs whose escalated requests land
    on it: every cascade tier that names it. The router counts a request escalated into
    a tier once, whatever the reasons and wherever it came from (the tier in front, an
    error's ``fallback.onError``, an out-of-domain start), as the tier takes it."""
    feeds: dict[str, list[tuple[str, str]]] = {}
    for pol in policies:
        for tier in pol.cascade:
            if tier.specialist is not None:
                feeds.setdefault(tier.specialist, []).append((pol.model_name, tier.name))
    return feeds


def signals_for(
    specialist: str,
    triton_model: str | None,
    router: Sequence[SourceWindow],
    triton: Sequence[SourceWindow],
    feeds: Sequence[tuple[str, str]] = (),
    window_s: float = 0.0,
) -> Signals:
    """One specialist's Signals from the windows of every router and Triton source."""
    rps = in_flight_little = unavailable = escalation = 0.0
    in_flight_gauge: float | None = None
    waiting = 0.0
    merged: dict[float, float] = {}
    count = total = 0.0
    for w in router:
        h = w.upstream.get(specialist)
        if h is not None:
            rps += h.count / w.span
            in_flight_little += h.total / w.span
            count += h.count
            total += h.total
            for le, c in h.buckets:
                merged[le] = merged.get(le, 0.0) + c
        if specialist in w.gauges["in_flight"]:
            in_flight_gauge = (in_flight_gauge or 0.0) + w.gauges["in_flight"][specialist]
        waiting += w.gauges["waiting"].get(specialist, 0.0)
        unavailable += w.unavailable.get(specialist, 0.0) / w.span
        escalation += sum(w.escalations.get(f, 0.0) for f in feeds) / w.span
    p95 = quantile(0.95, sorted(merged.items()))
    queue_ms: float | None = None
    if triton and triton_model is not None:
        done = sum(w.triton_success.get(triton_model, 0.0) for w in triton)
        queued_us = sum(w.triton_queue_us.get(triton_model, 0.0) for w in triton)
        pending = sum(w.gauges["triton_pending"].get(triton_model, 0.0) for w in triton)
        if done > 0:
            queue_ms = queued_us / done / 1000.0
        else:  # nothing finished: whatever is pending has waited the whole window
            queue_ms = max(w.span for w in triton) * 1000.0 if pending > 0 else 0.0
    return Signals(
        window_s=window_s or max((w.span for w in router), default=0.0),
        request_rps=rps,
        # The larger of two estimates: Little's law (the growth of the latency sum) is
        # the exact mean for requests that completed in the window but blind to those
        # still running or waiting; the router's gauge sees those, sampled at scrapes.
        in_flight=max(in_flight_little, in_flight_gauge or 0.0),
        p95_ms=None if p95 is None else p95 * 1000.0,
        mean_ms=total / count * 1000.0 if count > 0 else None,
        queue_ms=queue_ms,
        waiting=waiting,
        unavailable_rps=unavailable,
        escalation_rps=escalation,
    )
