"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes whose Pods "run"), from binaries that
``hack/control-plane.sh`` builds once from the Go module proxy.

Used by the integration tests, the operator benchmark and ``slmfleet up --cluster``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .procs import stop_group

REPO = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "slmfleet-admin-token"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU = "nvidia.com/gpu"


# Every write, at Metadata level: tests and benchmarks count the operator's writes
# (kopf's own included) from here, by User-Agent.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
"""
OPERATOR_AGENTS = ("kopf/", "slmfleet-operator/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> Path:
    """The cached binary directory, building it on first use."""
    script = REPO / "hack" / "control-plane.sh"
    out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def fake_node(
    name: str, *, gpus: int = 0, cpu: str = "32", memory: str = "256Gi"
) -> dict[str, Any]:
    capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": "zone-a",
        "type": "kwok",
    }
    spec: dict[str, Any] = {}
    if gpus:
        capacity[GPU] = str(gpus)
        labels["nvidia.com/gpu.present"] = "true"
        spec["taints"] = [{"key": GPU, "value": "present", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@dataclass
class LocalCluster:
    """Start with ``with LocalCluster() as cluster:``; ``cluster.kubeconfig`` is the path."""

    gpu_nodes: int = 2
    cpu_nodes: int = 1
    gpus_per_node: int = 8
    workdir: Path | None = None
    bin_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def audit_log(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "audit.log"

    def writes(self, user_agent_prefixes: tuple[str, ...]) -> Counter[str]:
        """API writes so far by clients whose User-Agent starts with a prefix, by verb."""
        counts: Counter[str] = Counter()
        if not self.audit_log.exists():
            return counts
        with self.audit_log.open() as f:
            for line in f:
                event = json.loads(line)
                if event.get("userAgent", "").startswith(user_agent_prefixes):
                    counts[event["verb"]] += 1
        return counts

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "kubeconfig"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir is not None
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env()
        )

    def log_tail(self, name: str, lines: int = 30) -> str:
        assert self.workdir is not None
        path = self.workdir / f"{name}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def _wait(self, what: str, check: Any, timeout: float, proc: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[proc].poll() is not None:
                raise RuntimeError(
                    f"{proc} exited while waiting for {what}:\n{self.log_tail(proc)}"
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.log_tail(proc)}")

    def start(self) -> None:
        self.bin_dir = self.bin_dir or binaries()
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix="slmfleet-cluster-"))
        w, b = self.workdir, self.bin_dir
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        subprocess.run(
            ["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"],
            check=True,
            capture_output=True,
        )
        (w / "audit-policy.yaml").write_text(AUDIT_POLICY)
        (w / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        self._spawn(
            "etcd",
            [
                str(b / "etcd"),
                f"--data-dir={w / 'etcd'}",
                "--unsafe-no-fsync",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--log-level=warn",
                "--quota-backend-bytes=8589934592",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(b / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--cert-dir={w / 'certs'}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={w / 'sa.key'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000",
                "--enable-priority-and-fairness=false",
                f"--audit-policy-file={w / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=batch",
                "--audit-log-batch-max-wait=1s",
                "--v=0",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig()
        self._wait(
            "the API server",
            lambda: self.kubectl("get", "--raw=/readyz").returncode == 0,
            90,
            "kube-apiserver",
        )
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false"]
        self._spawn(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                *common,
                f"--service-account-private-key-file={w / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--concurrent-gc-syncs=40",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(b / "kube-scheduler"),
                *common,
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(b / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={b / 'kwok-stages.yaml'}",
                "--node-lease-duration-seconds=40",  # heartbeats keep fake nodes Ready
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                "--cidr=10.0.1.0/24",
                "--node-ip=10.0.1.1",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        nodes = [fake_node(f"gpu-{i}", gpus=self.gpus_per_node) for i in range(self.gpu_nodes)]
        nodes += [fake_node(f"cpu-{i}") for i in range(self.cpu_nodes)]
        self.apply_objects(nodes)
        self._wait(
            "the default service account",
            lambda: self.kubectl("get", "serviceaccount", "default").returncode == 0,
            60,
            "kube-controller-manager",
        )

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {"cluster": "local", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "local",
        }
        self.kubeconfig.write_text(json.dumps(config))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each control-plane process."""
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=check,
            timeout=120,
        )

    def apply_objects(self, objects: list[dict[str, Any]]) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        result = self.kubectl("apply", "--server-side", "-f", "-", input=doc)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            stop_group(self.procs.pop(name))
        if self.workdir and not os.environ.get("SLMFLEET_KEEP_CLUSTER"):
            shutil.rmtree(self.workdir, ignore_errors=True)
