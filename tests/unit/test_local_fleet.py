"""The local fleet's pure part: manifests -> validated items -> stand-ins -> router config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmfleet.local.fleet import (
    ManifestError,
    default_namespace,
    export_stand_ins,
    load_fleet,
    local_router_config,
    read_documents,
    stand_ins,
)
from slmfleet.local.models import standin

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "examples" / "retail-support"
GPU = REPO / "examples" / "gpu"

SPECIALIST = """\
apiVersion: slmfleet.io/v1alpha1
kind: SLMSpecialist
metadata: {{name: {name}}}
spec:
  model: {{uri: "hf://org/{name}", backend: vllm{extra}}}
  domain: {{keywords: [{name}], examples: ["{name} question one", "{name} question two"]}}
"""
POLICY = """\
apiVersion: slmfleet.io/v1alpha1
kind: RouterPolicy
metadata: {name: p}
spec:
  specialists: {names: [a, b]}
"""


def write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_retail_example_maps_every_specialist_to_its_declared_stand_in():
    fleet = load_fleet(RETAIL)
    assert fleet.namespace == "retail-support"
    kinds = {c.model: c.stand_in.kind for c in stand_ins(fleet)}
    assert kinds == {
        "orders": "domain",
        "returns": "domain",
        "shipping": "domain",
        "billing": "domain",
        "products": "domain",
        "account": "domain",
        "generalist": "generalist",
        "order-lookup": "extractor",
    }
    assert fleet.skipped == ["PersistentVolumeClaim/slmfleet-models"]


def test_retail_stand_in_examples_are_the_domain_examples():
    """The model (parameters) and the router (domain) learn from the same utterances."""
    for item in load_fleet(RETAIL).specialists:
        params = item.spec.model.parameters
        if params.get("standin") != "domain":
            continue
        by_label = json.loads(params["examples"])
        assert sorted(by_label) == sorted(item.spec.domain.labels), item.name
        flat = [e for label in by_label.values() for e in label]
        assert sorted(flat) == sorted(item.spec.domain.examples), item.name
        assert 10 <= len(flat) <= 20, item.name
        assert set(json.loads(params["replies"])) == set(by_label)
        # The stand-in recognises its own examples with its own label.
        model = standin.build(dict(params))
        for label, texts in by_label.items():
            for text in texts:
                assert model.respond(text, {}).text.startswith(label + ":"), (item.name, text)


def test_retail_router_config_is_every_specialist_ready_on_the_local_triton():
    config = local_router_config(load_fleet(RETAIL), "127.0.0.1:9001")
    assert {p.model_name for p in config.policies} == {"retail-support", "order-lookup"}
    assert all(s.ready and s.endpoint == "127.0.0.1:9001" for s in config.specialists)
    assert {s.triton_model for s in config.specialists} == {
        s.id.split("/")[1] for s in config.specialists
    }
    support = next(p for p in config.policies if p.model_name == "retail-support")
    assert len(support.specialists) == 6 and "retail-support/generalist" not in support.specialists
    assert [t.name for t in support.cascade] == ["specialist", "generalist", "human"]
    assert support.cascade[0].accept.label_thresholds["refund"] == 0.97
    assert support.cascade[1].specialist == "retail-support/generalist"
    assert support.routing.rules[0].specialist == "retail-support/returns"
    assert support.budgets == ["retail-support/retail-support"]


def test_gpu_example_maps_to_cpu_stand_ins():
    fleet = load_fleet(GPU)
    choices = {c.model: c for c in stand_ins(fleet)}
    assert choices["reasoner"].stand_in.kind == "reasoner"
    assert choices["reasoner"].stand_in.parameters["start_marker"] == "<think>"
    assert choices["support-chat"].stand_in.kind == "domain"
    assert "vllm/awq" in choices["support-chat"].why
    examples = json.loads(choices["support-chat"].stand_in.parameters["examples"])
    assert examples == {"support_chat": fleet.specialists[0].spec.domain.examples}
    assert choices["general-8b"].stand_in.kind == "generalist"  # no territory of its own
    config = local_router_config(fleet, "h:1")
    assert {s.backend for s in config.specialists} == {"python"}  # stand-ins, locally


def test_other_backends_use_keywords_when_there_are_no_examples(tmp_path):
    spec = SPECIALIST.format(name="a", extra="").replace(
        ', examples: ["a question one", "a question two"]', ""
    )
    path = write(tmp_path, {"a.yaml": spec, "b.yaml": SPECIALIST.format(name="b", extra=""),
                            "p.yaml": POLICY})  # fmt: skip
    choice = next(c for c in stand_ins(load_fleet(path)) if c.model == "a")
    assert json.loads(choice.stand_in.parameters["examples"]) == {"a": ["a"]}


def test_multi_doc_lists_configmaps_and_namespace(tmp_path):
    cm = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: more}
data: {lines: "b extra one\\nb extra two\\n"}
"""
    b = SPECIALIST.format(name="b", extra="").replace(
        'examples: ["b question one", "b question two"]',
        "examplesFrom: {name: more, key: lines}",
    )
    listed = {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "s"}}]}  # fmt: skip
    path = write(
        tmp_path / "My Fleet" if (tmp_path / "My Fleet").mkdir() is None else tmp_path,
        {
            "all.yaml": "---\n".join([SPECIALIST.format(name="a", extra=""), b, POLICY, cm]),
            "list.json": json.dumps(listed),
            "README.md": "not a manifest",
        },
    )
    fleet = load_fleet(path)
    assert fleet.namespace == "my-fleet"
    assert [s.name for s in fleet.specialists] == ["a", "b"]
    assert fleet.skipped == []
    assert fleet.secrets == {("my-fleet", "s"): {}}  # Secrets are kept, in their namespace
    config = local_router_config(fleet, "h:1")
    b_cfg = next(s for s in config.specialists if s.id == "my-fleet/b")
    assert b_cfg.domain.examples == ["b extra one", "b extra two"]
    choice = next(c for c in stand_ins(fleet) if c.model == "b")
    assert json.loads(choice.stand_in.parameters["examples"]) == {
        "b": ["b extra one", "b extra two"]
    }


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "kind: [unclosed"}, "not valid YAML"),
        ({"a.yaml": "- just\n- a list\n"}, "must be a mapping"),
        ({"p.yaml": POLICY}, "no SLMSpecialist"),
        ({"a.yaml": SPECIALIST.format(name="a", extra="")}, "no RouterPolicy"),
        (
            {"a.yaml": SPECIALIST.format(name="a", extra=", quantization: awq, bogus: 1"),
             "p.yaml": POLICY},
            "spec.model.bogus: Extra inputs are not permitted",
        ),
        (
            {"a.yaml": SPECIALIST.format(name="a", extra="").replace("hf://", "http://"),
             "p.yaml": POLICY},
            "spec.model.uri: String should match pattern",
        ),
        (
            {"a.yaml": SPECIALIST.format(name="a", extra=""), "p.yaml": POLICY},
            "missing SLMSpecialists: b",
        ),
        (
            {"a.yaml": SPECIALIST.format(name="a", extra=""),
             "b.yaml": SPECIALIST.format(name="a", extra="")},
            "also defined in a.yaml#1",
        ),
        (
            {"a.yaml": SPECIALIST.format(name="a", extra="").replace("backend: vllm",
             "backend: python, parameters: {standin: wizard}"),
             "b.yaml": SPECIALIST.format(name="b", extra=""), "p.yaml": POLICY},
            "standin must be one of",
        ),
    ],
    ids=["yaml", "not-mapping", "no-specialist", "no-policy", "unknown-field", "bad-uri",
         "missing-target", "duplicate", "unknown-standin"],
)  # fmt: skip
def test_bad_manifests_are_refused_with_the_file_and_field(tmp_path, files, message):
    path = write(tmp_path, files)
    with pytest.raises(ManifestError, match=message.replace(".", r"\.")):
        fleet = load_fleet(path)
        stand_ins(fleet)
        local_router_config(fleet, "h:1")


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        read_documents(tmp_path / "nope")
    with pytest.raises(ManifestError, match="no manifests"):
        read_documents(tmp_path)


def test_default_namespace():
    assert default_namespace(RETAIL) == "retail-support"
    assert default_namespace(RETAIL / "policy.yaml") == "policy"


def test_export_stand_ins_writes_the_claim_layout(tmp_path):
    written = export_stand_ins(load_fleet(RETAIL), tmp_path, claim="slmfleet-models")
    assert len(written) == 8
    for name in ("orders", "generalist", "order-lookup"):
        assert sorted(p.name for p in (tmp_path / "retail" / name).iterdir()) == [
            "model.py",
            "standin.py",
        ]
    assert export_stand_ins(load_fleet(RETAIL), tmp_path / "x", claim="other") == []


EXPORT_REFUSED = [
    "pvc://models/../../escaped",
    "pvc://models/retail/../../../escaped",
    "pvc://models/{abs}/escaped",  # pvc://models//abs/... : an absolute path
]


@pytest.mark.parametrize("uri", EXPORT_REFUSED)
def test_export_stand_ins_refuses_paths_outside_the_root(tmp_path, uri):
    uri = uri.replace("{abs}", str(tmp_path))
    spec = f"""\
apiVersion: slmfleet.io/v1alpha1
kind: SLMSpecialist
metadata: {{name: sneaky}}
spec:
  model: {{uri: "{uri}", backend: python, parameters: {{standin: generalist}}}}
  domain: {{keywords: [x]}}
"""
    folder = tmp_path / "manifests"
    folder.mkdir()
    write(folder, {"s.yaml": spec, "p.yaml": POLICY.replace("[a, b]", "[sneaky]")})
    root = tmp_path / "a" / "b" / "root"
    with pytest.raises(ManifestError, match=r"SLMSpecialist 'sneaky'.*inside the claim"):
        export_stand_ins(load_fleet(folder), root)
    assert [p for p in tmp_path.rglob("*") if p.name == "escaped"] == []


def test_local_replicas_are_listed_for_every_specialist():
    fleet = load_fleet(RETAIL)
    single = local_router_config(fleet, "127.0.0.1:9001")
    assert all(s.replicas == [] for s in single.specialists)
    endpoints = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    config = local_router_config(fleet, "127.0.0.1:9001", endpoints)
    assert config.specialists and all(s.replicas == endpoints for s in config.specialists)
    assert {s.endpoint for s in config.specialists} == {"127.0.0.1:9001"}
    assert config.policies == single.policies


def test_dense_example_keeps_the_tensorrtllm_contract_split_and_rollouts():
    fleet = load_fleet(GPU.parent / "dense")
    choices = {c.model: c for c in stand_ins(fleet)}
    assert choices["shipping"].stand_in.contract == "tensorrtllm"
    assert choices["billing"].stand_in.contract == "python"
    labels = json.loads(choices["intent"].stand_in.parameters["examples"])
    assert set(labels) == {"refund", "invoice", "payment_method", "tracking",
                           "delivery_address", "damaged"}  # fmt: skip
    config = local_router_config(fleet, "h:1")
    backends = {s.id.split("/")[1]: s.backend for s in config.specialists}
    assert backends == {"billing": "python", "billing-3b": "python", "intent": "python",
                        "shipping": "tensorrtllm", "shipping-next": "tensorrtllm",
                        "faq-returns": "python", "faq-stores": "python",
                        "faq-warranty": "python", "billing-fr": "python"}  # fmt: skip
    # Locally the pool's members and the adapter are stand-ins of their own.
    fr = next(s for s in config.specialists if s.id == "dense/billing-fr")
    assert (fr.triton_model, fr.lora_name) == ("billing-fr", None)
    support = next(p for p in config.policies if p.model_name == "support")
    assert support.routing.split.enabled and support.routing.split.max_parts == 3
    assert [(r.mode, r.specialist, r.candidate, r.percent) for r in support.rollouts] == [
        ("canary", "dense/billing", "dense/billing-3b", 10.0),
        ("shadow", "dense/shipping", "dense/shipping-next", 20.0),
    ]
