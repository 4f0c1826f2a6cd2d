"""Operator at scale on the real control plane.

Applies N SLMSpecialists (default 100 and 1,000) and measures, per N:
- seconds until every child (ConfigMap, Deployment, Service, PDB) exists and every
  specialist's status is current (observedGeneration == generation, conditions set);
- seconds until every specialist is Ready (Pods scheduled on fake nodes and running);
- API writes per specialist, counted from the API server's audit log by User-Agent,
  so kopf's own writes (annotations, events) count as well as ours;
- writes during 60 s of idleness after convergence (target 0);
- the operator's peak RSS.

Usage: python benchmarks/operator_scale.py [--sizes 100 1000] [--idle 60]
Results: benchmarks/results/operator_scale.json (and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from slmfleet.clients.kube import KubeClient
from slmfleet.local.cluster import OPERATOR_AGENTS, LocalCluster, fake_node
from slmfleet.local.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PODS_PER_NODE = 110


def specialist(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"hf://bench/{name}", "backend": "python"},
            "domain": {"description": f"{name} requests", "keywords": [name]},
            "serving": {"resources": {"cpu": "10m", "memory": "64Mi"}},
        },
    }


async def create_all(kube: KubeClient, namespace: str, n: int) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        obj = specialist(f"s{i:04d}")
        obj["metadata"]["namespace"] = namespace
        async with sem:
            await kube.apply(obj, manager="benchmark")

    await asyncio.gather(*(one(i) for i in range(n)))


async def progress(kube: KubeClient, namespace: str) -> tuple[int, int, int]:
    """(children complete specialists, status-current specialists, Ready specialists)."""
    specs = await kube.list("SLMSpecialist", namespace)
    sel = "app.kubernetes.io/managed-by=slmfleet"
    kinds = ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget")
    lists = await asyncio.gather(*(kube.list(k, namespace, sel) for k in kinds))
    children = min(len(items) for items in lists)
    current = ready = 0
    for body in specs:
        status = body.get("status") or {}
        if status.get("observedGeneration") == body["metadata"]["generation"] and status.get(
            "conditions"
        ):
            current += 1
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]):
                ready += 1
    return children, current, ready


def total(counter: dict[str, int]) -> int:
    return sum(counter.values())


async def run_size(cluster: LocalCluster, n: int, idle: float) -> dict[str, Any]:
    namespace = f"bench-{n}"
    cluster.kubectl("create", "namespace", namespace)
    operator = OperatorProcess(cluster.kubeconfig, log_path=cluster.workdir / f"operator-{n}.log")
    operator.start()
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    kube = KubeClient.from_environment(user_agent="slmfleet-benchmark/0.1")
    time.sleep(2)
    writes0 = cluster.writes(OPERATOR_AGENTS)
    t0 = time.monotonic()
    await create_all(kube, namespace, n)
    applied = time.monotonic() - t0
    t_status = t_ready = None
    deadline = t0 + max(300, n * 0.6)
    while time.monotonic() < deadline:
        children, current, ready = await progress(kube, namespace)
        now = time.monotonic() - t0
        if t_status is None and children >= n and current >= n:
            t_status = now
        if ready >= n:
            t_ready = now
            break
        await asyncio.sleep(0.5)
    time.sleep(3)  # audit batches flush every second
    writes1 = cluster.writes(OPERATOR_AGENTS)
    time.sleep(idle)
    writes2 = cluster.writes(OPERATOR_AGENTS)
    rss = operator.rss_bytes()
    cpu = operator.cpu_seconds()
    operator.stop()
    await kube.close()
    converge = {k: writes1.get(k, 0) - writes0.get(k, 0) for k in writes1}
    idle_writes = total(writes2) - total(writes1)
    return {
        "specialists": n,
        "apply_seconds": round(applied, 2),
        "children_and_status_seconds": round(t_status, 2) if t_status else None,
        "all_ready_seconds": round(t_ready, 2) if t_ready else None,
        "operator_writes": converge,
        "writes_per_specialist": round(total(converge) / n, 2),
        "idle_seconds": idle,
        "idle_writes": idle_writes,
        "operator_peak_rss_mib": round(rss / 2**20, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    nodes = max(args.sizes) // PODS_PER_NODE + 2
    rows = []
    with LocalCluster(gpu_nodes=1, cpu_nodes=0) as cluster:
        crds = cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        assert crds.returncode == 0, crds.stderr
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.kubectl("create", "namespace", "slmfleet-system")
        cluster.apply_objects([fake_node(f"cpu-{i}", cpu="64") for i in range(nodes)])
        for n in args.sizes:
            print(f"operator_scale: {n} specialists ...", flush=True)
            row = asyncio.run(run_size(cluster, n, args.idle))
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "operator_scale",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "target": "1000 specialists converged in <= 60 s; 0 idle writes",
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "operator_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Operator scale (real control plane, kwok nodes)",
        "",
        "| specialists | apply s | children+status s | all Ready s | writes/specialist |"
        " idle writes (s) | peak RSS MiB | operator CPU s | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['specialists']} | {r['apply_seconds']} | {r['children_and_status_seconds']} "
            f"| {r['all_ready_seconds']} | {r['writes_per_specialist']} "
            f"| {r['idle_writes']} ({r['idle_seconds']:.0f}) | {r['operator_peak_rss_mib']} "
            f"| {r['operator_cpu_seconds']} | {r['load_average']:.1f} |"
        )
    lines += ["", f"Load average at the end: {os.getloadavg()}", ""]
    (RESULTS / "operator_scale.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
