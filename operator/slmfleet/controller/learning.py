"""The operator's learning loop: proposals in RouterPolicy.status, never in the spec.

Thin glue around ``learn.schedule`` (which policies are due, what status a result
makes) and ``learn.job`` (one run). Every ``SLMFLEET_LEARNING_TICK_SECONDS`` the loop
looks for policies with ``spec.learning.enabled`` whose interval has passed; for each in
turn it renders the router configuration the fleet loop would write, hands it with the
policy's spec to a child process (``python -m slmfleet.learn.job``: niced, its CPU time
capped by RLIMIT_CPU, killed after ``SLMFLEET_LEARNING_TIMEOUT_SECONDS``) that reads the
decision store at ``SLMFLEET_LEARNING_STORE_URL``, and writes ``thresholdProposals``,
``learning`` and the ``Learned`` condition through the status subresource (merged with
the other writers' conditions, retried on a conflict). One run at a time: the loop
uses at most one core, and the other loops never wait for it.

The child needs the router's dependencies (numpy, scikit-learn, the embedding model):
the chart runs the operator from the router image when ``learning.enabled`` is set.
Without a store URL the loop only tells opted-in policies so (``NoDecisionStore``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..clients.kube import ApiError
from ..learn.schedule import due, status_of
from ..render.conditions import merge_conditions
from .runtime import Runtime, remember
from .supervisor import Beat

log = logging.getLogger("slmfleet.learning")


@dataclass(frozen=True)
class LearningSettings:
    store_url: str = ""
    password_file: str | None = None
    tick_seconds: float = 60.0
    timeout_seconds: float = 900.0
    cpu_seconds: int = 900

    @classmethod
    def from_environment(cls) -> LearningSettings:
        env = os.environ.get
        return cls(
            store_url=env("SLMFLEET_LEARNING_STORE_URL", ""),
            password_file=env("SLMFLEET_LEARNING_STORE_PASSWORD_FILE") or None,
            tick_seconds=float(env("SLMFLEET_LEARNING_TICK_SECONDS", "60")),
            timeout_seconds=float(env("SLMFLEET_LEARNING_TIMEOUT_SECONDS", "900")),
            cpu_seconds=int(env("SLMFLEET_LEARNING_CPU_SECONDS", "900")),
        )


def _bounded(cpu_seconds: int):  # runs in the child between fork and exec
    def limit() -> None:
        os.nice(19)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    return limit


async def run_job(job: dict[str, Any], settings: LearningSettings, beat: Beat) -> dict[str, Any]:
    """One learning run in a bounded child process; its result, or why there is none."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slmfleet.learn.job",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_bounded(settings.cpu_seconds),
    )
    talk = asyncio.ensure_future(proc.communicate(orjson.dumps(job)))
    deadline = time.monotonic() + settings.timeout_seconds
    try:
        while not talk.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                talk.cancel()
                proc.kill()
                await proc.wait()
                return {"outcome": "failed", "message": "the learning run timed out"}
            await asyncio.wait({talk}, timeout=min(5.0, remaining))
            beat()  # waiting on a child is progress: the loop is not stuck
        out, err = talk.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not out:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return {"outcome": "failed", "message": f"exit {proc.returncode}: {tail[0]}"[:512]}
    return orjson.loads(out)


async def write_learning_status(rt: Runtime, body: dict[str, Any], owned: dict[str, Any]) -> None:
    """Patch the owned fields and merge the Learned condition into the newest version."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for attempt in (1, 2):
        current = body.get("status") or {}
        patch = {
            **owned,
            "conditions": merge_conditions(current.get("conditions"), owned["conditions"]),
        }
        rv = (body.get("metadata") or {}).get("resourceVersion")
        try:
            remember(
                rt.store.policies,
                await rt.kube.patch_status("RouterPolicy", ns, name, patch, resource_version=rv),
            )
            return
        except ApiError as err:
            if err.status == 404:
                return
            if err.status != 409 or attempt == 2:
                raise
            fresh = await rt.kube.get("RouterPolicy", ns, name)
            if fresh is None:
                return
            body = fresh


async def learn_one(
    rt: Runtime, body: dict[str, Any], settings: LearningSettings, beat: Beat
) -> dict[str, Any]:
    if not settings.store_url:
        return {"outcome": "no_store"}
    from .fleet import render  # the configuration the fleet loop would write now

    rendered = await render(rt)
    config = rendered.config.model_dump(by_alias=True, mode="json", exclude_none=True)
    meta = body["metadata"]
    job = {
        "config": config,
        "policy": f"{meta['namespace']}/{meta['name']}",
        "spec": body.get("spec") or {},
        "store": settings.store_url,
        "passwordFile": settings.password_file,
    }
    return await run_job(job, settings, beat)


async def learning_loop(rt: Runtime, beat: Beat) -> None:
    settings = LearningSettings.from_environment()
    last_run: dict[str, float] = {}
    log.info("learning loop: store %s", "configured" if settings.store_url else "not configured")
    while True:
        beat()
        for body in due(list(rt.store.policies.values()), last_run, time.time()):
            meta = body["metadata"]
            last_run[meta.get("uid", "")] = time.time()
            ident = f"{meta['namespace']}/{meta['name']}"
            try:
                result = await learn_one(rt, dict(body), settings, beat)
            except Exception as exc:  # one policy's failure never stops the others
                log.warning("learning %s failed: %s", ident, exc)
                result = {"outcome": "failed", "message": str(exc)[:512]}
            log.info("learning %s: %s", ident, result.get("outcome"))
            fresh = rt.store.policies.get((meta["namespace"], meta["name"]), body)
            try:
                await write_learning_status(
                    rt, dict(fresh), status_of(result, meta.get("generation"))
                )
            except Exception as exc:
                log.warning("learning %s: status not written: %s", ident, exc)
            beat()
        await asyncio.sleep(settings.tick_seconds)
