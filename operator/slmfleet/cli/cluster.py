"""``slmfleet up --cluster PATH``: the fleet on a local control plane, watched to Ready.

Starts ``LocalCluster`` (etcd, kube-apiserver, controller-manager, scheduler, kwok with
fake GPU nodes), applies the CRDs, runs the operator, binds every PersistentVolumeClaim
of the fleet to a hostPath volume holding the stand-in model code (the local stand-in
for "populate the claim"), applies the manifests with ``kubectl apply --server-side``
and shows the slmfleet resources until all are Ready. Pods on fake nodes "run" but
serve nothing: this mode shows the operator and the API, ``slmfleet up PATH`` serves.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ..local.cluster import REPO, LocalCluster
from ..local.fleet import ManifestError, export_stand_ins, load_fleet, read_documents
from ..local.operator import OperatorProcess
from ..local.redis import RedisServer
from .console import Console, Stop, shielded, stop_on_signals
from .main import ledger_dir

KINDS = "slmspecialists.slmfleet.io,routerpolicies.slmfleet.io,budgets.slmfleet.io"
SHORT = {"SLMSpecialist": "slm", "RouterPolicy": "rp", "Budget": "slmbudget"}
FIELD_MANAGER = "slmfleet-up"


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def row_of(obj: dict[str, Any]) -> tuple[str, str, str, str, bool]:
    """(resource, READY, REASON, MESSAGE, done) for the status table."""
    meta = obj["metadata"]
    ready = _condition(obj, "Ready")
    current = (obj.get("status") or {}).get("observedGeneration") == meta.get("generation")
    done = ready.get("status") == "True" and current
    status = ready.get("status", "-") if current or not ready else f"{ready.get('status')}*"
    reason = ready.get("reason", "Pending")
    message = (ready.get("message") or "").replace("\n", " ")
    return f"{SHORT.get(obj['kind'], obj['kind'])}/{meta['name']}", status, reason, message, done


def render_table(objects: list[dict[str, Any]], width: int = 100) -> list[str]:
    rows = [row_of(o) for o in objects]
    name_w = max([len("RESOURCE"), *(len(r[0]) for r in rows)])
    reason_w = max([len("REASON"), *(len(r[2]) for r in rows)])
    lines = [f"  {'RESOURCE':<{name_w}}  READY  {'REASON':<{reason_w}}  MESSAGE"]
    for name, status, reason, message, _ in rows:
        line = f"  {name:<{name_w}}  {status:<5}  {reason:<{reason_w}}  {message}"
        lines.append(line[:width])
    return lines


def persistent_volumes(path: Path, namespace: str, root: Path) -> list[dict[str, Any]]:
    """A pre-bound hostPath PV for every PVC of the fleet (the local control plane has
    no storage provisioner)."""
    pvs = []
    for doc in read_documents(path):
        body = doc.body
        if body.get("kind") != "PersistentVolumeClaim":
            continue
        name = body["metadata"]["name"]
        spec = body.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pvs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"slmfleet-up-{namespace}-{name}"[:253],
                    "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
                },
                "spec": {
                    "capacity": {"storage": storage},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": spec.get("storageClassName") or "",
                    "claimRef": {"namespace": namespace, "name": name},
                    "hostPath": {"path": str(root / name), "type": "DirectoryOrCreate"},
                },
            }
        )
    return pvs


def _get(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", KINDS, "-n", namespace, "-o", "json")
    if out.returncode != 0:
        return []
    items = json.loads(out.stdout).get("items", [])
    order = {"SLMSpecialist": 0, "RouterPolicy": 1, "Budget": 2}
    return sorted(items, key=lambda o: (order.get(o["kind"], 9), o["metadata"]["name"]))


def watch_ready(
    cluster: LocalCluster, namespace: str, expected: int, say: Console, timeout: float
) -> bool:
    """Show the table until every resource is Ready (a live table on a terminal; on a
    pipe, the table again whenever it changes). True when all are Ready."""
    begin = time.monotonic()
    shown: list[str] = []
    while True:
        objects = _get(cluster, namespace)
        lines = render_table(objects)
        ready = sum(1 for o in objects if row_of(o)[4])
        lines.append(f"  {ready}/{expected} Ready ({time.monotonic() - begin:.0f}s)")
        if say.tty:
            if shown:
                say.out.write(f"\x1b[{len(shown)}F\x1b[J")
            say("\n".join(lines))
            shown = lines
        elif lines[:-1] != shown[:-1]:
            say("\n".join(lines))
            shown = lines
        if objects and ready == expected == len(objects):
            return True
        if time.monotonic() - begin > timeout:
            return False
        time.sleep(1.0)


def up_cluster(args: argparse.Namespace, say: Console) -> int:
    path = Path(args.path)
    try:
        fleet = load_fleet(path, args.namespace)
    except ManifestError as exc:
        say(f"error: {exc}")
        return 2
    ns = fleet.namespace
    expected = len(fleet.specialists) + len(fleet.policies) + len(fleet.budgets)
    workdir = Path(tempfile.mkdtemp(prefix="slmfleet-cluster-"))
    cluster = LocalCluster(workdir=workdir, gpu_nodes=args.gpu_nodes)
    operator: OperatorProcess | None = None
    redis: RedisServer | None = None
    code = 0
    with stop_on_signals():
        try:
            say(
                f"Starting the local control plane: etcd, kube-apiserver, controller-manager, "
                f"scheduler, kwok ({args.gpu_nodes} fake GPU nodes x 8 GPUs, 1 CPU node)..."
            )
            begin = time.monotonic()
            cluster.start()
            say(f"  API server ready at {cluster.server} ({time.monotonic() - begin:.1f}s)")
            crds = REPO / "crds"
            result = cluster.kubectl("apply", "--server-side", "-f", str(crds))
            if result.returncode != 0:
                raise RuntimeError(f"applying the CRDs failed: {result.stderr}")
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s",
                *(f"crd/{k}" for k in KINDS.split(",")),
            )  # fmt: skip
            say(f"  CRDs installed from {crds}")
            for name in ("slmfleet-system", ns):
                cluster.kubectl("create", "namespace", name)
            ledger_env: dict[str, str] = {}
            data = ledger_dir(args)
            if data is not None:
                redis = RedisServer(data).start()
                ledger_env["SLMFLEET_LEDGER_URL"] = redis.url
                say(f"  spend ledger: redis-server on {redis.url}, data in {data}")
            say("Starting the operator...")
            operator = OperatorProcess(
                cluster.kubeconfig, log_path=workdir / "operator.log", extra_env=ledger_env
            )
            operator.start()
            say(f"  operator running (log {operator.log_path})")
            volumes = workdir / "volumes"
            pvs = persistent_volumes(path, ns, volumes)
            for pv in pvs:
                claim = pv["spec"]["claimRef"]["name"]
                export_stand_ins(fleet, volumes / claim, claim=claim)
            if pvs:
                cluster.apply_objects(pvs)
                say(f"  {len(pvs)} hostPath volume(s) with the stand-in models for the claims")
            say(f"Applying {path} to namespace {ns}...")
            result = cluster.kubectl(
                "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-n", ns,
                "-f", str(path),
            )  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"kubectl apply failed:\n{result.stderr}")
            for line in result.stdout.splitlines():
                say(f"  {line}")
            say("Waiting for the fleet to go Ready...")
            if watch_ready(cluster, ns, expected, say, args.startup_timeout):
                say(f"all Ready: {expected} resources in namespace {ns}")
            else:
                say(f"warning: not all Ready after {args.startup_timeout:.0f}s; still running")
                code = 1
            say()
            say("The cluster is yours until Ctrl-C:")
            say(f"    export KUBECONFIG={cluster.kubeconfig}")
            say(f"    alias kubectl={cluster.bin_dir}/kubectl")
            say(f"    kubectl get slm,rp,slmbudget,deploy,pods -n {ns}")
            say("    kubectl get configmap -n slmfleet-system -l slmfleet.io/router-config")
            say("(the kubeconfig and the cluster are deleted on exit; "
                "SLMFLEET_KEEP_CLUSTER=1 keeps the files)")  # fmt: skip
            say("Press Ctrl-C to stop.")
            while True:
                time.sleep(0.5)
                dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited:\n{cluster.log_tail(dead[0])}")
                if operator.proc is not None and operator.proc.poll() is not None:
                    raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
        except Stop as sig:
            say()
            say(f"{sig}: tearing down the operator and the control plane...")
        except (RuntimeError, OSError, TimeoutError, ManifestError) as exc:
            say(f"error: {exc}")
            code = 1
        finally:
            with shielded(say):
                if operator is not None:
                    operator.stop()
                if redis is not None:
                    redis.stop()
                cluster.stop()
    say("Stopped." if code == 0 else "Stopped after an error.")
    return code
