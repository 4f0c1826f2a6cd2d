"""The CRDs in crds/ are generated from the pydantic models and must not drift."""

from pathlib import Path

import pytest
import yaml

from slmfleet import crddocs, crdgen

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_checked_in_crds_match_the_models():
    rendered = crdgen.render_all()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert on_disk == rendered, "crds/ is stale: run `make crds`"


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", sorted(crdgen.render_all()))
def test_schema_is_structural(name):
    crd = yaml.safe_load(crdgen.render_all()[name])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "$defs", "title", "const"):
            assert forbidden not in node, f"{forbidden} at {path}"
        if "properties" in node:
            assert node.get("type") == "object", path
            for prop, sub in node["properties"].items():
                assert "type" in sub or sub.get("x-kubernetes-preserve-unknown-fields"), (
                    f"{path}.{prop} has no type"
                )
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        ("SLMSpecialist", "slm", {"Ready", "Backend", "Replicas", "Age"}),
        ("RouterPolicy", "rp", {"Ready", "Model", "Age"}),
        ("Budget", "slmbudget", {"Ready", "State", "Age"}),
    ],
)
def test_envelope(kind, short, columns):
    crds = [yaml.safe_load(text) for text in crdgen.render_all().values()]
    crd = next(c for c in crds if c["spec"]["names"]["kind"] == kind)
    version = crd["spec"]["versions"][0]
    assert short in crd["spec"]["names"]["shortNames"]
    assert version["subresources"]["status"] == {}
    # Only SLMSpecialist has a replica count for kubectl scale, HPA and KEDA to set.
    scale = version["subresources"].get("scale")
    if kind == "SLMSpecialist":
        assert scale == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        props = version["schema"]["openAPIV3Schema"]["properties"]
        assert props["spec"]["properties"]["replicas"]["type"] == "integer"
        assert props["status"]["properties"]["selector"]["type"] == "string"
    else:
        assert scale is None
    assert columns <= {c["name"] for c in version["additionalPrinterColumns"]}


def test_every_field_is_documented():
    """kubectl explain must document every field of every spec."""
    undocumented = []
    for name, text in crdgen.render_all().items():
        schema = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema["properties"]["spec"]):
            for prop, sub in node.get("properties", {}).items():
                if not sub.get("description"):
                    undocumented.append(f"{name}:{path}.{prop}")
    assert not undocumented, undocumented


def test_check_mode_reports_drift(tmp_path):
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    victim = next(tmp_path.glob("*.yaml"))
    victim.write_text(victim.read_text() + "# edited\n")
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1


def test_crd_reference_matches_the_models():
    reference = CRDS.parent / "docs" / "crd-reference.md"
    assert reference.read_text() == crddocs.render() + "\n", "stale: run `make crds`"


def test_crd_reference_documents_every_spec_field():
    text = crddocs.render()
    for field in ("spec.model.uri", "spec.cascade[].accept.labelThresholds", "spec.spend[].window"):
        assert f"| `{field}` |" in text, field
