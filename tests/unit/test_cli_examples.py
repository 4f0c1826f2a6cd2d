"""The GitOps examples, which need CRDs this project's test cluster does not have
(Argo CD's Application, Flux's GitRepository and Kustomization): their structure is
checked here, and the Argo CD Lua health checks run against sample objects with a real
Lua interpreter (``lupa`` when installed, else the Debian ``lua5.4`` binary).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "examples" / "gitops"
KINDS = ("SLMSpecialist", "RouterPolicy", "Budget", "SLMPool")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_argocd_application_points_at_the_retail_fleet():
    app = load(GITOPS / "argocd" / "application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    spec = app["spec"]
    assert (REPO / spec["source"]["path"]).is_dir()
    assert spec["source"]["path"] == "examples/retail-support"
    assert spec["destination"]["namespace"] == "retail-support"
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]
    assert {"repoURL", "targetRevision", "path"} <= set(spec["source"])


def test_argocd_cm_has_a_health_check_per_kind():
    cm = load(GITOPS / "argocd" / "argocd-cm-health.yaml")
    assert cm["metadata"] == {**cm["metadata"], "name": "argocd-cm", "namespace": "argocd"}
    keys = {f"resource.customizations.health.slmfleet.io_{k}" for k in KINDS}
    assert keys == set(cm["data"])


def test_flux_kustomization_and_source():
    repo = load(GITOPS / "flux" / "gitrepository.yaml")
    ks = load(GITOPS / "flux" / "kustomization.yaml")
    assert repo["kind"] == "GitRepository" and repo["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert ks["kind"] == "Kustomization" and ks["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
    assert (REPO / ks["spec"]["path"]).is_dir() and ks["spec"]["wait"] is True
    assert {e["kind"] for e in ks["spec"]["healthCheckExprs"]} == set(KINDS)
    for expr in ks["spec"]["healthCheckExprs"]:
        assert {"current", "failed", "inProgress"} <= set(expr)
        assert expr["apiVersion"] == "slmfleet.io/v1alpha1"


# -- the Lua health checks, run for real ---------------------------------------------------------


def lua_literal(value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # Lua accepts these escapes for plain text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def run_health(script: str, obj: dict) -> tuple[str, str]:
    try:
        import lupa  # type: ignore[import-not-found]
    except ImportError:
        lupa = None
    program = f"obj = {lua_literal(obj)}\nlocal function check()\n{script}\nend\n"
    if lupa is not None:
        runtime = lupa.LuaRuntime()
        hs = runtime.execute(program + "return check()")
        return hs["status"], hs["message"]
    lua = shutil.which("lua5.4") or shutil.which("lua")
    if lua is None:
        pytest.skip("no Lua interpreter (apt-get install lua5.4, or pip install lupa)")
    program += 'local hs = check()\nio.write(hs.status, "\\t", hs.message or "")\n'
    out = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, check=True)
    status, _, message = out.stdout.partition("\t")
    return status, message


def condition(type_, status, reason="R", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message}


def obj(generation=2, observed=2, conditions=None, status=True):
    body = {"metadata": {"name": "x", "generation": generation}}
    if status:
        body["status"] = {"observedGeneration": observed, "conditions": conditions or []}
    return body


CASES = [
    ("no status yet", obj(status=False), "Progressing", "Waiting for the slmfleet operator"),
    (
        "ready",
        obj(conditions=[condition("Ready", "True", "Available", "1/1 replicas available")]),
        "Healthy",
        "1/1 replicas available",
    ),
    (
        "progressing",
        obj(conditions=[condition("Ready", "False", "Progressing", "0/1 replicas available"),
                        condition("Stalled", "False")]),
        "Progressing",
        "0/1 replicas available",
    ),
    (
        "stalled",
        obj(conditions=[condition("Ready", "False", "TargetsNotFound", "missing: a"),
                        condition("Stalled", "True", "TargetsNotFound", "missing: a")]),
        "Degraded",
        "missing: a",
    ),
    (
        "old generation",
        obj(generation=3, observed=2, conditions=[condition("Ready", "True")]),
        "Progressing",
        "Waiting for the operator to observe generation 3",
    ),
    ("no observedGeneration", obj(observed=None), "Progressing", "generation 2"),
    (
        "budget exceeded",
        obj(conditions=[condition("Ready", "True"),
                        condition("Exceeded", "True", "Exceeded", "1h window over 2 USD")]),
        "Degraded",
        "1h window over 2 USD",
    ),
    ("no conditions", obj(conditions=[]), "Progressing", "Waiting for the Ready condition"),
    (
        "scaled to zero: at rest",
        obj(conditions=[condition("Ready", "False", "ScaledToZero", "scaled to zero replicas"),
                        condition("Stalled", "False")]),
        "Healthy",
        "scaled to zero replicas",
    ),
    (
        "pool member not loaded: at rest",
        obj(conditions=[condition("Ready", "False", "Unloaded", "not loaded in pool p"),
                        condition("Reconciling", "False", "Unloaded"),
                        condition("Stalled", "False")]),
        "Healthy",
        "not loaded in pool p",
    ),
    (
        "pool member draining: not at rest",
        obj(conditions=[condition("Ready", "False", "Unloaded", "unloading"),
                        condition("Reconciling", "True", "Unloaded"),
                        condition("Stalled", "False")]),
        "Progressing",
        "unloading",
    ),
    (
        "starting from zero",
        obj(conditions=[condition("Ready", "False", "ScalingFromZero", "starting from zero"),
                        condition("Stalled", "False")]),
        "Progressing",
        "starting from zero",
    ),
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("case", "body", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_lua_health(kind, case, body, status, message):
    cm = load(GITOPS / "argocd" / "argocd-cm-health.yaml")
    script = cm["data"][f"resource.customizations.health.slmfleet.io_{kind}"]
    got_status, got_message = run_health(script, {"kind": kind, **body})
    assert got_status == status
    assert message in got_message
