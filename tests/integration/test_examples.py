"""Every example manifest applied to the real API server (server-side apply, so the CRD
schemas and CEL rules judge them exactly as in a cluster).

The GitOps examples' Argo CD Application and Flux GitRepository/Kustomization need
CRDs this control plane does not have (and a server-side dry run of an unknown kind is
refused), so those are checked structurally in tests/unit/test_cli_examples.py; the
argocd-cm health ConfigMap is a core kind and is applied here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FLEETS = ["retail-support", "gpu", "dense"]


def _names(path: Path, kind: str) -> set[str]:
    names = set()
    for file in sorted(path.glob("*.yaml")):
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("kind") == kind:
                names.add(doc["metadata"]["name"])
    return names


@pytest.mark.parametrize("fleet", FLEETS)
def test_fleet_example_is_accepted_by_the_api_server(kube, namespace, fleet):
    path = EXAMPLES / fleet
    out = kube("apply", "--server-side", "-n", namespace, "-f", str(path))
    assert "serverside-applied" in out
    kinds = (("SLMSpecialist", "slm"), ("RouterPolicy", "rp"), ("Budget", "slmbudget"),
             ("SLMPool", "slmpool"))  # fmt: skip
    for kind, short in kinds:
        stored = {o["metadata"]["name"] for o in kube.items(short, namespace)}
        assert stored == _names(path, kind), kind
    # Applying again changes nothing (GitOps tools re-apply all the time).
    again = kube("apply", "--server-side", "-n", namespace, "-f", str(path))
    assert "serverside-applied" in again
    for name in sorted(_names(path, "SLMSpecialist")):
        model = kube.get("slm", name, namespace)["spec"]["model"]
        uri = model["uri"] if "uri" in model else model["adapter"]["uri"]
        assert uri.startswith(("pvc://", "hf://")), name


def test_argocd_health_configmap_is_a_valid_configmap(kube, namespace):
    cm = yaml.safe_load((EXAMPLES / "gitops" / "argocd" / "argocd-cm-health.yaml").read_text())
    cm["metadata"]["namespace"] = namespace  # the real one lives in the argocd namespace
    kube.apply(cm, namespace)
    stored = kube.get("configmap", "argocd-cm", namespace)
    assert len(stored["data"]) == 4  # SLMSpecialist, RouterPolicy, Budget, SLMPool
