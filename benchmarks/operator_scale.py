"""Operator at scale on the real control plane.

Applies N SLMSpecialists (default 100 and 1,000) and measures, per N:
- seconds until every child (ConfigMap, Deployment, Service, PDB) exists and every
  specialist's status is current (observedGeneration == generation, conditions set);
- seconds until every specialist is Ready (Pods scheduled on fake nodes and running);
- API writes per specialist, counted from the API server's audit log by User-Agent,
  so kopf's own writes (annotations, events) count as well as ours;
- writes during 60 s of idleness after convergence (target 0);
- the operator's peak RSS;
and, once, how long a RouterPolicy change takes to be served by a real router.

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
import urllib.request
from pathlib import Path
from typing import Any

from slmfleet.clients.kube import KubeClient
from slmfleet.local.cluster import OPERATOR_AGENTS, LocalCluster, fake_node, free_port
from slmfleet.local.operator import OperatorProcess
from slmfleet.local.router import RouterProcess

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


async def progress(kube: KubeClient, namespace: str) -> tuple[int, int]:
    """(status-current specialists, Ready specialists). A status is current once the
    operator applied every child of that generation, so children need no polling (and
    listing them every second would load the API server more than the operator does)."""
    current = ready = 0
    for body in await kube.list("SLMSpecialist", namespace):
        status = body.get("status") or {}
        if status.get("observedGeneration") == body["metadata"]["generation"] and status.get(
            "conditions"
        ):
            current += 1
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]):
                ready += 1
    return current, ready


async def children(kube: KubeClient, namespace: str) -> int:
    """Specialists with all four children (the least complete kind counts)."""
    sel = "app.kubernetes.io/managed-by=slmfleet"
    kinds = ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget")
    lists = await asyncio.gather(*(kube.list(k, namespace, sel) for k in kinds))
    return min(len(items) for items in lists)


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
    cpu0 = cluster.cpu_seconds()
    t0 = time.monotonic()
    await create_all(kube, namespace, n)
    applied = time.monotonic() - t0
    t_status = t_ready = None
    deadline = t0 + max(300, n * 0.6)
    while time.monotonic() < deadline:
        current, ready = await progress(kube, namespace)
        now = time.monotonic() - t0
        if t_status is None and current >= n:
            t_status = now
        if ready >= n:
            t_ready = now
            break
        await asyncio.sleep(1.0)
    complete = await children(kube, namespace)
    cpu1 = cluster.cpu_seconds()
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
        "specialists_with_all_children": complete,
        "all_ready_seconds": round(t_ready, 2) if t_ready else None,
        "operator_writes": converge,
        "writes_per_specialist": round(total(converge) / n, 2),
        "idle_seconds": idle,
        "idle_writes": idle_writes,
        "operator_peak_rss_mib": round(rss / 2**20, 1),
        "operator_cpu_seconds": round(cpu, 1),
        "control_plane_cpu_seconds": {k: round(cpu1[k] - cpu0.get(k, 0), 1) for k in cpu1},
        "load_average": os.getloadavg()[0],
    }


def model_ids(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as resp:
        return {m["id"] for m in json.loads(resp.read())["data"]}


def propagation(cluster: LocalCluster, rounds: int) -> dict[str, Any]:
    """Seconds from a RouterPolicy change to the router serving it, through the
    operator's ConfigMap and the router's watch."""
    ns = "bench-propagation"
    cluster.kubectl("create", "namespace", ns)
    objs = [specialist("faq"), {
        "apiVersion": "slmfleet.io/v1alpha1", "kind": "RouterPolicy",
        "metadata": {"name": "p"},
        "spec": {"modelName": "m-0", "specialists": {"names": ["faq"]}},
    }]  # fmt: skip
    for obj in objs:
        obj["metadata"]["namespace"] = ns
    cluster.apply_objects(objs)
    operator = OperatorProcess(cluster.kubeconfig, log_path=cluster.workdir / "operator-p.log")
    operator.start()
    router = RouterProcess(
        ["--configmap", "slmfleet-system/slmfleet-router", "--no-access-log"],
        port=free_port(),
        log_path=cluster.workdir / "router.log",
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    ).start()
    samples = []
    try:
        deadline = time.monotonic() + 60
        while "m-0" not in model_ids(router.url) and time.monotonic() < deadline:
            time.sleep(0.1)
        for i in range(1, rounds + 1):
            patch = json.dumps({"spec": {"modelName": f"m-{i}"}})
            t0 = time.monotonic()
            cluster.kubectl("patch", "rp", "p", "-n", ns, "--type=merge", "-p", patch)
            while f"m-{i}" not in model_ids(router.url):
                if time.monotonic() - t0 > 30:
                    raise TimeoutError(f"policy change {i} did not reach the router")
                time.sleep(0.02)
            samples.append(time.monotonic() - t0)
            time.sleep(1.5)  # let the operator's rate limit window pass: independent samples
    finally:
        router.stop()
        operator.stop()
    samples.sort()
    return {
        "rounds": rounds,
        "p50_seconds": round(samples[len(samples) // 2], 3),
        "max_seconds": round(samples[-1], 3),
        "target_seconds": 2.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    nodes = max(args.sizes) // PODS_PER_NODE + 2
    rows = []
    with LocalCluster(gpu_nodes=1, cpu_nodes=0) as cluster:
        crds = cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        assert crds.returncode == 0, crds.stderr
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
        cluster.kubectl("create", "namespace", "slmfleet-system")
        cluster.apply_objects([fake_node(f"cpu-{i}", cpu="64") for i in range(nodes)])
        print("operator_scale: policy change -> router ...", flush=True)
        prop = propagation(cluster, args.rounds)
        print(json.dumps(prop), flush=True)
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
        "policy_to_router": prop,
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
    lines += [
        "",
        f"Policy change -> served by the router (real watch of the operator's ConfigMap): "
        f"p50 {prop['p50_seconds']} s, max {prop['max_seconds']} s over {prop['rounds']} "
        f"changes (target 2 s).",
        "",
        f"Load average at the end: {os.getloadavg()}",
        "",
    ]
    (RESULTS / "operator_scale.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
