"""A day of traffic against the autoscaler's pure decision function, in seconds.

Shared by benchmarks/autoscale_economics.py and autoscale_stability.py. The decision is
the operator's own ``slmfleet.autoscale.decide.decide``; what stands in for the world is
a queueing model of a fleet of replicas, stated here so the figures can be judged:

- each replica serves ``slots`` requests at once (continuous batching at the SLO), each
  taking ``service_mean_s`` on average and ``service_p95_s`` at p95;
- below saturation the wait is M/M/N's (Erlang C: P(wait > t) = C e^{-(N mu - lambda) t}),
  above it a backlog grows and drains as a fluid;
- a new replica serves ``startup_s`` after it is asked for (model load) and costs from
  the moment it is asked for; a removed replica stops at once;
- arrivals are Poisson around the trace's rate; the autoscaler sees, every ``step_s``,
  the trailing ``window_s`` of request rate, in-flight (Little's law), request-weighted
  p95, mean latency and queue time: what the router's and Triton's metrics give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from slmfleet.autoscale.decide import ScalePolicy, ScalerState, Signals, decide

DAY_S = 86_400


@dataclass(frozen=True)
class Service:
    slots: int = 8
    service_mean_s: float = 0.5
    service_p95_s: float = 0.9
    startup_s: float = 90.0


# ---------------------------------------------------------------------------- traces


def _bump(hours: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hours - center) / width) ** 2)


SHAPES = ("office", "evening", "spiky")


def day_trace(
    seed: int, shape: str, peak_rps: float, step_s: float = 5.0, length_s: float = DAY_S
) -> np.ndarray:
    """Request rate per step over a day: a diurnal shape, slow multiplicative noise
    (AR(1), ~5 min memory) and a few sudden bursts (x1.5-2.2 for 3-20 minutes).
    ``length_s`` shorter than a day compresses the same day into it."""
    rng = np.random.default_rng(seed)
    n = int(length_s / step_s)
    hours = np.linspace(0, 24, n, endpoint=False)
    if shape == "office":
        base = 0.06 + _bump(hours, 10.5, 1.8) + 0.85 * _bump(hours, 15.5, 2.2)
        base -= 0.25 * _bump(hours, 12.8, 0.5)
    elif shape == "evening":
        base = 0.08 + 0.35 * _bump(hours, 12.5, 2.5) + 1.0 * _bump(hours, 20.5, 1.6)
    elif shape == "spiky":
        base = 0.25 + 0.5 * _bump(hours, 14.0, 4.0)
    else:
        raise ValueError(shape)
    shift = rng.uniform(-0.75, 0.75)  # peaks move from day to day
    base = np.roll(base, int(shift * n / 24))
    base = base / base.max()
    # Slow noise: AR(1) in log space, stationary sigma 0.12, ~5 minutes of memory.
    phi = math.exp(-step_s / 300.0)
    eps = rng.normal(0, 0.12 * math.sqrt(1 - phi**2), n)
    noise = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + eps[i]
        noise[i] = acc
    rate = base * np.exp(noise)
    bursts = {"office": 3, "evening": 3, "spiky": 10}[shape]
    for _ in range(rng.poisson(bursts)):
        start = rng.integers(0, n)
        dur = int(rng.uniform(180, 1200) / step_s)
        factor = rng.uniform(1.5, 2.2)
        ramp = max(1, int(60 / step_s))
        for j in range(dur):
            k = start + j
            if k >= n:
                break
            up = min(1.0, (j + 1) / ramp) * min(1.0, (dur - j) / ramp)
            rate[k] *= 1 + (factor - 1) * up
    return peak_rps * rate / max(1.0, float(np.percentile(rate, 99.5)))


# ---------------------------------------------------------------------------- queueing


@lru_cache(maxsize=200_000)
def erlang_c(servers: int, load_x20: int) -> float:
    """P(wait) in M/M/N with ``servers`` and offered load ``load_x20 / 20`` Erlangs."""
    a = load_x20 / 20.0
    if servers <= 0:
        return 1.0
    if a >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    return servers * b / (servers - a * (1 - b))


@dataclass
class Step:
    p95_s: float
    mean_s: float
    queue_s: float
    in_flight: float


def serve(rate: float, ready: int, backlog: float, svc: Service, dt: float, until_ready: float):
    """One step of the queue: (Step, new backlog)."""
    mu = 1.0 / svc.service_mean_s
    servers = ready * svc.slots
    if servers == 0:
        backlog += rate * dt
        wait = until_ready + backlog / max(mu, 1e-9) / max(svc.slots, 1)
        return Step(svc.service_p95_s + wait, svc.service_mean_s + wait, wait, backlog), backlog
    capacity = servers * mu
    backlog = max(0.0, backlog + (rate - capacity) * dt)
    fluid = backlog / capacity
    w95 = w_mean = 0.0
    if rate < capacity:
        pw = erlang_c(servers, round(rate / mu * 20))
        gap = capacity - rate
        w_mean = pw / gap
        w95 = math.log(pw / 0.05) / gap if pw > 0.05 else 0.0
    mean = svc.service_mean_s + w_mean + fluid
    step = Step(svc.service_p95_s + w95 + fluid, mean, w_mean + fluid, rate * mean)
    return step, backlog


# ---------------------------------------------------------------------------- the loop


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if weights.sum() <= 0:
        return float(values.max()) if len(values) else 0.0
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


@dataclass
class Result:
    step_s: float
    rate: np.ndarray
    replicas: np.ndarray  # desired (cost counts from the ask)
    ready: np.ndarray
    p95_ms: np.ndarray
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def replica_hours(self) -> float:
        return float(self.replicas.sum() * self.step_s / 3600)

    def minute_p95_ms(self) -> np.ndarray:
        per = int(60 / self.step_s)
        n = len(self.rate) // per
        out = np.zeros(n)
        for m in range(n):
            sl = slice(m * per, (m + 1) * per)
            out[m] = weighted_quantile(self.p95_ms[sl], self.rate[sl], 0.95)
        return out

    def violation_minutes(self, slo_ms: float) -> int:
        per = int(60 / self.step_s)
        busy = self.rate[: len(self.minute_p95_ms()) * per].reshape(-1, per).sum(axis=1) > 0
        return int(((self.minute_p95_ms() > slo_ms) & busy).sum())

    def changes(self) -> list[tuple[float, int]]:
        """(time, delta) of every change of the desired replicas."""
        d = np.diff(self.replicas)
        return [(float((i + 1) * self.step_s), int(d[i])) for i in np.nonzero(d)[0]]


def simulate(
    rates: np.ndarray,
    policy: ScalePolicy,
    svc: Service,
    *,
    step_s: float = 5.0,
    window_s: float = 30.0,
    static: int | None = None,
    seed: int = 0,
) -> Result:
    """Replay ``rates`` (requests/s per step) through the autoscaler (or a static count)."""
    rng = np.random.default_rng(seed + 7919)
    n = len(rates)
    arrivals = rng.poisson(rates * step_s) / step_s
    replicas = np.zeros(n, dtype=int)
    ready_arr = np.zeros(n, dtype=int)
    p95 = np.zeros(n)
    mean = np.zeros(n)
    queue = np.zeros(n)
    inflight = np.zeros(n)
    reasons: dict[str, int] = {}
    current = static if static is not None else max(policy.min_replicas, 1)
    pending: list[float] = []  # ready times of replicas still starting
    ready = current
    backlog = 0.0
    state = ScalerState()
    win = max(1, int(window_s / step_s))
    for i in range(n):
        t = i * step_s
        became = [p for p in pending if p <= t]
        pending = [p for p in pending if p > t]
        ready += len(became)
        until = (min(pending) - t) if pending else (3600.0 if current == 0 else 0.0)
        s, backlog = serve(arrivals[i], ready, backlog, svc, step_s, until)
        p95[i], mean[i], queue[i], inflight[i] = s.p95_s, s.mean_s, s.queue_s, s.in_flight
        replicas[i], ready_arr[i] = current, ready
        if static is not None:
            continue
        sl = slice(max(0, i - win + 1), i + 1)
        w = arrivals[sl]
        done = w.sum() > 0
        signals = Signals(
            window_s=(sl.stop - sl.start) * step_s,
            request_rps=float(w.mean()),
            in_flight=float(inflight[sl].mean()),
            p95_ms=weighted_quantile(p95[sl], w, 0.95) * 1000 if done else None,
            mean_ms=float((mean[sl] * w).sum() / w.sum() * 1000) if done else None,
            queue_ms=float((queue[sl] * w).sum() / w.sum() * 1000) if done else None,
            waiting=backlog if ready == 0 else 0.0,
        )
        d = decide(signals, current=current, ready=ready, policy=policy, state=state, now=t)
        state = d.state
        reasons[d.reason] = reasons.get(d.reason, 0) + 1
        if d.replicas > current:
            pending += [t + svc.startup_s] * (d.replicas - current)
        elif d.replicas < current:
            drop = current - d.replicas
            while drop and pending:  # cancel starting replicas first
                pending.pop()
                drop -= 1
            ready -= drop
        current = d.replicas
    return Result(step_s, arrivals, replicas, ready_arr, p95 * 1000, reasons)


def smallest_static(rates: np.ndarray, policy: ScalePolicy, svc: Service, slo_ms: float,
                    step_s: float, budget_minutes: int) -> int:  # fmt: skip
    """The fewest constant replicas whose violation minutes stay within the budget."""
    for r in range(1, policy.max_replicas + 1):
        res = simulate(rates, policy, svc, step_s=step_s, static=r)
        if res.violation_minutes(slo_ms) <= budget_minutes:
            return r
    return policy.max_replicas
