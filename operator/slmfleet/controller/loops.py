"""The operator's supervised loops: one line each.

Every loop here runs under ``supervisor.Supervisor`` from start-up to clean-up,
restarted with backoff when it fails, and reported by the liveness probe. To add one,
append a line::

    Loop("name", run, stall_after=seconds)     # async def run(rt, beat): ... forever
    Loop.every("name", seconds, step)          # async def step(rt): ... once per period

``rt`` is the ``runtime.Runtime`` (Kubernetes client in ``rt.kube``, settings in
``rt.config``, per-object state in ``rt.store``); ``run`` calls ``beat()`` whenever it
makes progress, or the loop counts as stalled after ``stall_after`` seconds.
"""

from __future__ import annotations

from . import autoscaling, budgets, fleet, learning, pools, specialist
from .supervisor import Loop

LOOPS: list[Loop] = [
    Loop("fleet", fleet.fleet_loop, stall_after=900),
    Loop("specialist-status", specialist.status_loop, stall_after=300),
    Loop("specialist-retry", specialist.retry_loop, stall_after=300),
    Loop("budget-status", budgets.budget_status_loop, stall_after=120),
    Loop("autoscaler", autoscaling.autoscaler_loop, stall_after=300),
    Loop("learning", learning.learning_loop, stall_after=300),
    Loop("pool-residency", pools.pool_loop, stall_after=900),
]
