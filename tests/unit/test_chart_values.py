"""The chart's static contracts: CRDs identical to crds/, a schema and a README entry
for every value, versions in step with the package."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "slmfleet"


def leaves(values: dict, schema: dict, prefix: str = "") -> list[tuple[str, dict | None]]:
    """Every value path with its schema node; structured objects (closed schemas) are
    walked, free-form maps (resources, nodeSelector, ...) are one value."""
    out: list[tuple[str, dict | None]] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        node = schema.get("properties", {}).get(key)
        if node and node.get("additionalProperties") is False and isinstance(value, dict):
            out.extend(leaves(value, node, path + "."))
        else:
            out.append((path, node))
    return out


def test_chart_crds_are_the_generated_crds():
    generated = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    packaged = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert generated, "crds/ is empty"
    assert packaged == generated, (
        "charts/slmfleet/crds differs from crds/: run `make crds` "
        "(it copies crds/*.yaml into charts/slmfleet/crds/)"
    )


def test_generated_crds_have_no_metadata_the_templated_copy_would_duplicate():
    # templates/crds.yaml adds annotations and labels under `metadata:` as text.
    for path in (CHART / "crds").glob("*.yaml"):
        meta = yaml.safe_load(path.read_text())["metadata"]
        assert set(meta) == {"name"}, f"{path.name}: update templates/crds.yaml"


def test_every_value_has_a_schema_and_a_readme_entry():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    for path, node in leaves(values, schema):
        assert node is not None, f"values.schema.json lacks {path}"
        assert node.get("description") or node.get("type"), path
        assert f"`{path}`" in readme, f"README.md does not list {path}"
    jsonschema.validate(values, schema)
    for extra in (CHART / "ci").glob("*-values.yaml"):
        jsonschema.validate(yaml.safe_load(extra.read_text()), schema)


@pytest.mark.parametrize(
    "bad",
    [
        {"router": {"replica": 2}},
        {"operator": {"logLevel": "verbose"}},
        {"router": {"service": {"type": "Ingress"}}},
        {"router": {"externalSecrets": ["shared-keys"]}},  # gone: Secrets stay in their namespace
        {"router": {"egress": {"allowHosts": ["https://api.example.com"]}}},
        {"router": {"egress": {"allowCIDRs": ["10.0.0.0"]}}},
        {"router": {"guard": {"bodyTimeoutSeconds": 0}}},
    ],
)
def test_schema_refuses_mistakes(bad):
    schema = json.loads((CHART / "values.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_versions_follow_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    from slmfleet.render.specialist import DEFAULT_FETCHER_IMAGE

    assert f"ghcr.io/slmfleet/fetcher:{version}" == DEFAULT_FETCHER_IMAGE
