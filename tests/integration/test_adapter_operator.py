"""LoRA adapter specialists on the real API server with the real operator: the base's
children carry the multi-LoRA config and one fetcher per adapter, adapters follow the
base's readiness and reach the router as the base's model with their lora_name, and a
missing or unsuitable base is a condition naming the field. (Serving with lora_name on
the real tritonserver: test_lora_standin.py.)"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.cluster import specialist_manifest, wait_for

pytestmark = pytest.mark.integration


def lora(name: str, base: str) -> dict:
    return {"apiVersion": "slmfleet.io/v1alpha1", "kind": "SLMSpecialist",
            "metadata": {"name": name},
            "spec": {"model": {"backend": "vllm",
                               "adapter": {"base": base, "uri": f"hf://org/{name}"}},
                     "domain": {"keywords": [name]}}}  # fmt: skip


def cond(body: dict | None, type_: str = "Ready") -> dict:
    for c in ((body or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def test_adapters_on_a_vllm_base(kube, operator, namespace):
    ns = namespace
    base = specialist_manifest("base")
    base["spec"]["model"]["backend"] = "vllm"
    kube.apply(base, ns)
    kube.apply(specialist_manifest("plain"), ns)  # a python-backend specialist
    for m in (lora("fr", "base"), lora("de", "base"), lora("orphan", "missing"),
              lora("wrong", "plain")):  # fmt: skip
        kube.apply(m, ns)

    def listed() -> set[str]:
        cm = kube.get("configmap", "slm-base-model", ns) or {}
        return set(json.loads((cm.get("data") or {}).get("multi_lora.json", "{}")))

    wait_for(lambda: listed() == {"fr", "de"}, 60, "both adapters in multi_lora.json")
    engine = json.loads(kube.get("configmap", "slm-base-model", ns)["data"]["model.json"])
    assert engine["enable_lora"] is True and engine["max_lora_rank"] == 16
    dep = kube.get("deployment", "slm-base", ns)
    inits = [c["name"] for c in dep["spec"]["template"]["spec"]["initContainers"]]
    assert inits == ["fetch-model", "fetch-lora-de", "fetch-lora-fr"]
    assert kube.get("deployment", "slm-fr", ns) is None  # no Deployment of its own

    # The adapters follow the base (kwok runs its Pods) and are the base's model.
    out = kube("wait", "--for=condition=Ready", "slm/fr", "slm/de", "-n", ns, "--timeout=120s")
    assert out.count("condition met") == 2
    fr = kube.get("slm", "fr", ns)["status"]
    assert (fr["endpoint"], fr["tritonModel"]) == (f"slm-base.{ns}.svc:8001", "base")
    wait_for(lambda: any(s.id == f"{ns}/fr" and s.ready
                         for s in kube.router_assembly().config.specialists),
             60, "fr ready in the router configuration")  # fmt: skip
    cfg = next(s for s in kube.router_assembly().config.specialists if s.id == f"{ns}/fr")
    assert (cfg.triton_model, cfg.lora_name) == ("base", "fr")

    # Bad bases: conditions naming the field.
    def invalid(name: str) -> dict:
        c = cond(kube.get("slm", name, ns))
        return c if c.get("reason") == "AdapterBaseInvalid" else {}

    orphan = wait_for(lambda: invalid("orphan"), 60, "orphan's condition")
    assert orphan["message"] == (
        "spec.model.adapter.base: no SLMSpecialist named 'missing' in this namespace"
    )
    wrong = wait_for(lambda: invalid("wrong"), 60, "wrong's condition")
    assert "'plain' is served by backend python; LoRA adapters need a vllm base" in wrong["message"]
    assert "multi_lora.json" not in (kube.get("configmap", "slm-plain-model", ns) or {})["data"]

    # An adapter that goes leaves the base's config.
    kube("delete", "slm", "de", "-n", ns)
    wait_for(lambda: listed() == {"fr"}, 60, "de gone from multi_lora.json")
