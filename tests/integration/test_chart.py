"""The Helm chart against the real control plane: lint, server-side validation, install
under the restricted Pod Security Standard, least-privilege RBAC proven by running the
real operator and the real router with the chart's ServiceAccount tokens, upgrade and
a clean uninstall.

The shared ``operator`` fixture (admin, all namespaces) is deliberately not requested.
Modules that run earlier in the session may have started it; both operators then apply
identical objects (idempotent), and the assertions that prove the chart's RBAC only rely
on what the shared operator never writes (this release's router ConfigMap) and on the
local operator's own log; the children are checked too when no shared operator ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from slmfleet.api.fragments import FRAGMENT_LABEL
from slmfleet.api.pool import SLMPoolSpec
from slmfleet.api.routerconfig import RouterConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.local.cluster import free_port
from slmfleet.local.operator import OperatorProcess
from slmfleet.render.pool import PoolMember, build_pool_children
from slmfleet.render.specialist import Owner, build_children
from tests.fixtures.chart import can_i, helm, review, sa_kubeconfig
from tests.fixtures.cluster import specialist_manifest as specialist
from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slmfleet"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
MONITORING = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor"]
FORBIDDEN_MARKERS = ("Forbidden", "forbidden", " 403")


def render(cluster, *args: str) -> list[dict]:
    out = helm(cluster, "template", "rel", str(CHART), *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


def external_policy(secret: str) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": "escalating"},
        "spec": {
            "specialists": {"names": ["refunds"]},
            "cascade": [
                {"name": "small", "routed": True},
                {"name": "large", "external": {"baseUrl": "https://api.example.com/v1",
                 "model": "big", "apiKey": {"name": secret, "key": "token"}}},
            ],
        },
    }  # fmt: skip


# -- without installing ----------------------------------------------------------------


def test_lint_strict(cluster):
    for extra in ([], ["-f", str(ALL_FEATURES)]):
        out = helm(cluster, "lint", "--strict", str(CHART), *extra).stdout
        assert "0 chart(s) failed" in out, out
    bad = helm(cluster, "lint", "--strict", str(CHART), "--set", "router.replica=2", check=False)
    assert bad.returncode != 0, "values.schema.json must refuse unknown values"
    assert "replica" in bad.stdout + bad.stderr


def test_templates_accepted_by_the_api_server(cluster, kube, namespace):
    for extra in ([], ["-f", str(ALL_FEATURES)]):
        docs = render(cluster, "-n", namespace, *extra)
        out = kube(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-",
            input="\n---\n".join(json.dumps(d) for d in docs),
        )  # fmt: skip
        assert "(server dry run)" in out
        assert len(out.strip().splitlines()) == len(docs)
    # Every optional object is rendered when enabled...
    docs = render(cluster, "-n", namespace, "-f", str(ALL_FEATURES))
    assert {"NetworkPolicy", "HorizontalPodAutoscaler", "CustomResourceDefinition"} <= kinds(docs)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {
        "slmspecialists.slmfleet.io",
        "routerpolicies.slmfleet.io",
        "budgets.slmfleet.io",
        "slmpools.slmfleet.io",
    }
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    router = next(d for d in deployments if d["metadata"]["name"].endswith("-router"))
    assert "replicas" not in router["spec"], "the HPA owns replicas"
    # ONNX classifiers' tokenizers: the claim mounted read-only where the router reads.
    pod = router["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "artifacts"]
    assert vol["persistentVolumeClaim"] == {"claimName": "slmfleet-classifiers", "readOnly": True}
    (ctr,) = pod["containers"]
    assert {"name": "SLMFLEET_ARTIFACT_ROOT", "value": "/var/lib/slmfleet/artifacts"} in ctr["env"]
    (mount,) = [m for m in ctr["volumeMounts"] if m["name"] == "artifacts"]
    assert mount == {"name": "artifacts", "mountPath": "/var/lib/slmfleet/artifacts",
                     "readOnly": True}  # fmt: skip
    # ...and monitoring only where the API serves monitoring.coreos.com/v1.
    assert not {"ServiceMonitor", "PodMonitor"} & kinds(docs)
    api = [a for m in MONITORING for a in ("--api-versions", m)]
    docs = render(cluster, "-n", namespace, "-f", str(ALL_FEATURES), *api)
    assert {"ServiceMonitor", "PodMonitor"} <= kinds(docs)
    # The defaults render nothing optional besides the PDB.
    defaults = kinds(render(cluster, "-n", namespace, *api))
    assert not {"NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor"} & defaults
    assert "CustomResourceDefinition" not in defaults
    assert "PodDisruptionBudget" in defaults


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn) on labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        inside = labels.get(e["key"]) in e["values"]
        if inside != (e["operator"] == "In"):
            return False
    return True


def test_triton_pod_monitor_selects_the_operators_triton_pods(cluster):
    """The chart's Triton PodMonitor scrapes the Pods the operator renders: specialists'
    and pools' (not the router's), by the name of the port their container serves
    metrics on, in the watched namespaces."""
    api = ["--api-versions", "monitoring.coreos.com/v1/PodMonitor"]
    on = ["--set", "monitoring.tritonPodMonitor.enabled=true"]
    assert "PodMonitor" not in kinds(render(cluster, *api))  # off by default
    assert "PodMonitor" not in kinds(render(cluster, *on))  # no Prometheus Operator
    docs = render(cluster, *on, *api)
    (mon,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert mon["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = mon["spec"]["podMetricsEndpoints"]

    specialist_spec = SLMSpecialistSpec.model_validate(
        {"model": {"uri": "hf://org/m", "backend": "python"}}
    )
    pool_spec = SLMPoolSpec.model_validate({"resources": {"memory": "4Gi"}})
    member = SLMSpecialistSpec.model_validate(
        {"model": {"uri": "hf://org/a", "backend": "python"}, "serving": {"pool": "p"}}
    )
    rendered = [
        *build_children(Owner("m", "tenant", "u1"), specialist_spec),
        *build_pool_children(Owner("p", "tenant", "u2", kind="SLMPool"), pool_spec,
                             [PoolMember("a", member)]),
    ]  # fmt: skip
    deployments = [d for d in rendered if d["kind"] == "Deployment"]
    assert len(deployments) == 2
    for dep in deployments:
        template = dep["spec"]["template"]
        assert selects(mon["spec"]["selector"], template["metadata"]["labels"]), dep["metadata"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        assert ports[endpoint["port"]] == 8002
    router = next(
        d for d in docs if d["kind"] == "Deployment" and "router" in d["metadata"]["name"]
    )
    assert not selects(mon["spec"]["selector"], router["spec"]["template"]["metadata"]["labels"])

    scoped = render(cluster, *on, *api, "--set", "operator.watchNamespaces={team-a,team-b}")
    (mon,) = [d for d in scoped if d["kind"] == "PodMonitor"]
    assert mon["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


# -- installed -------------------------------------------------------------------------


class RouterProcess:
    """The real router, run locally with a kubeconfig (as the router ServiceAccount)."""

    def __init__(self, kubeconfig: Path, configmap: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = open(log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slmfleet.router", "--configmap", configmap,
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def release(cluster, kube) -> Iterator[tuple[str, str]]:
    """A release namespace under the restricted Pod Security Standard (enforced)."""
    ns = f"rel-{uuid.uuid4().hex[:6]}"
    kube("create", "namespace", ns)
    kube("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    name = f"slmfleet-{uuid.uuid4().hex[:4]}"  # contains the chart name: fullname == name
    yield ns, name
    helm(cluster, "uninstall", name, "-n", ns, check=False)
    kube("delete", "namespace", ns, "--wait=false", check=False)


def test_install_rbac_upgrade_uninstall(cluster, kube, namespace, release, tmp_path):
    ns, name = release
    started = time.monotonic()
    shared_operator = kube.get("configmap", "slmfleet-router", "slmfleet-system") is not None
    helm(cluster, "install", name, str(CHART), "-n", ns, "--wait", "--timeout=120s")
    operator_sa = f"system:serviceaccount:{ns}:{name}-operator"
    router_sa = f"system:serviceaccount:{ns}:{name}-router"
    config_cm = f"{name}-router-config"

    # Operator (1) and router (2) Pods Running on the untainted fake CPU node, admitted
    # under the restricted Pod Security Standard.
    def running(component: str, count: int) -> list[dict]:
        pods = kube.items("pods", ns, f"app.kubernetes.io/component={component}")
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ok = len(live) == count and all(p["status"].get("phase") == "Running" for p in live)
        return live if ok else []

    for component, count in (("operator", 1), ("router", 2)):
        pods = wait_for(lambda c=component, n=count: running(c, n), 60, f"{component} pods")
        assert {p["spec"]["nodeName"] for p in pods} == {"cpu-0"}
    dep = kube.get("deployment", f"{name}-operator", ns)
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["replicas"] == 1
    assert (
        kube.get("configmap", config_cm, ns)["metadata"]["labels"]["app.kubernetes.io/component"]
        == "router-config"
    )

    # Least privilege, asked of the API server's authorizer.
    secrets_role = f"{config_cm}-secrets"
    for verb, what, where in [
        ("list", "secrets", ns),
        ("watch", "secrets", namespace),
        ("create", "pods", namespace),
        ("delete", "namespaces", ""),
        ("delete", "deployments.apps", namespace),
        ("delete", "configmaps", namespace),
        ("update", "deployments.apps", namespace),
        ("patch", "roles.rbac.authorization.k8s.io/other", namespace),
        ("create", "roles.rbac.authorization.k8s.io/other", namespace),
        ("delete", f"roles.rbac.authorization.k8s.io/{secrets_role}", namespace),
        ("escalate", "roles.rbac.authorization.k8s.io", namespace),
        ("bind", "roles.rbac.authorization.k8s.io", namespace),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("list", "namespaces", ""),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("delete", "slmspecialists.slmfleet.io", namespace),
        ("patch", "slmspecialists.slmfleet.io", namespace),  # only /status and /scale
        ("patch", "slmpools.slmfleet.io", namespace),
        ("create", "slmspecialists.slmfleet.io", namespace),
        ("patch", "routerpolicies.slmfleet.io", namespace),
        ("watch", "endpointslices.discovery.k8s.io", namespace),
    ]:
        scope = ["-n", where] if where else []
        assert not can_i(kube, operator_sa, verb, what, *scope), f"operator may {verb} {what}"
    for verb, what, where in [
        ("patch", "deployments.apps", namespace),
        ("list", "slmspecialists.slmfleet.io", namespace),
        ("patch", "networkpolicies.networking.k8s.io", namespace),
        ("get", "secrets/llm", namespace),  # to grant it; only metadata is read
        ("patch", f"roles.rbac.authorization.k8s.io/{secrets_role}", namespace),
        ("patch", f"rolebindings.rbac.authorization.k8s.io/{secrets_role}", namespace),
        ("delete", "configmaps", ns),  # stale fragments, in the release namespace only
        # The built-in autoscaler: where to scrape, its Events (the count: below).
        ("list", "endpointslices.discovery.k8s.io", namespace),
        ("create", "events", namespace),
        # Modes hpa and keda: their object, and deleting the one a mode no longer uses.
        ("patch", "horizontalpodautoscalers.autoscaling", namespace),
        ("delete", "horizontalpodautoscalers.autoscaling", namespace),
    ]:
        assert can_i(kube, operator_sa, verb, what, "-n", where), f"operator may not {verb} {what}"
    # Subresources (`kind/x` would name an object x): the replica count and the status
    # are patched through theirs, never the objects themselves.
    sub = ("slmspecialists.slmfleet.io", "-n", namespace, "--subresource")
    assert can_i(kube, operator_sa, "patch", *sub, "scale")
    assert can_i(kube, operator_sa, "patch", *sub, "status")
    assert not can_i(kube, operator_sa, "update", *sub, "scale")
    for verb in ("create", "patch", "delete"):  # mode keda, whether KEDA is installed or not
        assert review(kube, operator_sa, verb, "keda.sh", "scaledobjects", namespace), verb
    assert not review(kube, operator_sa, "delete", "keda.sh", "scaledjobs", namespace)
    assert can_i(kube, router_sa, "list", "configmaps", "-n", ns)
    assert can_i(kube, router_sa, "watch", "configmaps", "-n", ns)
    for verb, what, where in [
        ("list", "configmaps", namespace),
        ("patch", f"configmaps/{config_cm}", ns),
        ("get", "secrets", ns),
        ("get", "secrets/llm", namespace),  # not before a policy references it
        ("list", "slmspecialists.slmfleet.io", ns),
        ("get", "pods", ns),
    ]:
        assert not can_i(kube, router_sa, verb, what, "-n", where), f"router may {verb} {what}"

    # ...and sufficient: the real operator and router, authenticated as the chart's
    # ServiceAccounts, reconcile a specialist and serve its configuration.
    op_kc = sa_kubeconfig(cluster, kube, ns, f"{name}-operator", tmp_path / "operator.kubeconfig")
    rt_kc = sa_kubeconfig(cluster, kube, ns, f"{name}-router", tmp_path / "router.kubeconfig")
    op = OperatorProcess(
        op_kc,
        router_configmap=f"{ns}/{config_cm}",
        log_path=tmp_path / "op.log",
        extra_env={"SLMFLEET_ROUTER_SERVICEACCOUNT": f"{name}-router"},
    )
    router = RouterProcess(rt_kc, f"{ns}/{config_cm}", tmp_path / "router.log")
    try:
        op.start()
        kube.apply(specialist("refunds"), namespace)
        out = kube("wait", "--for=condition=Ready", "slm/refunds", "-n", namespace, "--timeout=90s")
        assert "condition met" in out

        def configured() -> RouterConfig | None:
            config = kube.router_assembly(ns, config_cm).config
            ready = {s.id for s in config.specialists if s.ready}
            return config if f"{namespace}/refunds" in ready else None

        config = wait_for(configured, 60, "router config written by the SA operator")
        assert config.specialist(f"{namespace}/refunds").endpoint == (
            f"slm-refunds.{namespace}.svc:8001"
        )
        # NOTES.txt's command shows that configuration, fragment by fragment.
        notes = helm(cluster, "get", "notes", name, "-n", ns).stdout
        (line,) = [ln for ln in notes.splitlines() if "kubectl" in ln and "router-config=" in ln]
        shown = kube(*shlex.split(line.strip())[1:])
        assert f"specialist/{namespace}/refunds" in shown, shown
        assert f'"endpoint":"slm-refunds.{namespace}.svc:8001"' in shown.replace(" ", ""), shown
        if not shared_operator:  # nobody else could have created these children
            for kind in ("configmap/slm-refunds-model", "deployment/slm-refunds",
                         "service/slm-refunds", "poddisruptionbudget/slm-refunds",
                         "networkpolicy/slm-refunds"):  # fmt: skip
                assert kube("get", kind, "-n", namespace, "-o", "name").strip()

        # A policy's external tier reads a Secret of its namespace: the SA operator
        # grants the router exactly that Secret (a Role it may write, rules it holds).
        kube("create", "secret", "generic", "llm", "--from-literal=token=sk-test", "-n", namespace)
        kube.apply(external_policy("llm"), namespace)
        wait_for(lambda: can_i(kube, router_sa, "get", "secrets/llm", "-n", namespace), 60,
                 "the router granted the referenced Secret")  # fmt: skip
        assert not can_i(kube, router_sa, "get", "secrets/other", "-n", namespace)
        assert not can_i(kube, router_sa, "list", "secrets", "-n", namespace)
        wait_for(lambda: router.status("/readyz") == 200, 60, "router ready from its ConfigMap")
        assert router.status("/healthz") == 200
        for log in (op.log_path, router.log_path):
            text = log.read_text(errors="replace")
            assert not any(m in text for m in FORBIDDEN_MARKERS), f"{log.name}:\n{text[-3000:]}"
        # kopf still knows no discovery/namespace permissions were needed.
        assert op.proc is not None and op.proc.poll() is None
    finally:
        router.stop()
        op.stop()

    # Upgrade: a changed value rolls out; the operator's configuration survives it.
    before = kube.router_assembly(ns, config_cm).config
    helm(cluster, "upgrade", name, str(CHART), "-n", ns, "--reuse-values",
         "--set", "router.replicas=3", "--wait", "--timeout=120s")  # fmt: skip
    assert kube.get("deployment", f"{name}-router", ns)["spec"]["replicas"] == 3
    wait_for(lambda: running("router", 3), 60, "3 router pods")
    assert kube.router_assembly(ns, config_cm).config == before
    assert "REVISION: 2" in helm(cluster, "status", name, "-n", ns).stdout

    # Uninstall: nothing of the release is left but the CRDs.
    kube("delete", "slm", "refunds", "-n", namespace, "--wait=false")
    helm(cluster, "uninstall", name, "-n", ns, "--wait", "--timeout=120s")
    selector = f"app.kubernetes.io/instance={name}"
    left = kube(
        "get", "all,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,"
        "networkpolicies,horizontalpodautoscalers", "-n", ns, "-l", selector, "-o", "name",
    )  # fmt: skip
    assert left.strip() == "", left
    cluster_left = kube("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
    assert cluster_left.strip() == "", cluster_left
    assert kube.get("configmap", config_cm, ns) is None
    wait_for(  # the fragments are owned by the anchor ConfigMap: garbage-collected with it
        lambda: not kube.items("configmaps", ns, f"{FRAGMENT_LABEL}={config_cm}"),
        60,
        "fragments collected",
    )
    assert kube("get", "crd", "slmspecialists.slmfleet.io", "-o", "name").strip()
    wait_for(lambda: not kube.items("pods", ns), 60, "release pods gone")
    assert time.monotonic() - started < 240
