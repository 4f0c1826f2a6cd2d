"""Generate the CRD manifests in ``crds/`` from the pydantic models.

pydantic emits JSON Schema with ``$ref``/``$defs`` and ``anyOf`` for optionals; the
API server wants a structural OpenAPI v3 schema. This module inlines references,
drops what structural schemas forbid, and adds the CRD envelope (printer columns,
short names, status subresource).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .api import GROUP, VERSION, Budget, RouterPolicy, SLMPool, SLMSpecialist

_DROP = {"title", "examples"}


def _key_rule(names: dict[str, Any]) -> dict[str, str]:
    """A map's ``propertyNames`` bounds (from pydantic's key type) as one CEL rule."""
    checks, words = [], []
    if "minLength" in names:
        checks.append(f"size(k) >= {names['minLength']}")
        words.append(f"at least {names['minLength']}")
    if "maxLength" in names:
        checks.append(f"size(k) <= {names['maxLength']}")
        words.append(f"at most {names['maxLength']}")
    message = "keys must have " + " and ".join(words) + " characters" if words else "keys"
    if "pattern" in names:
        checks.append(f"k.matches(r'{names['pattern']}')")
        message += f" and match {names['pattern']}"
    unknown = set(names) - {"minLength", "maxLength", "pattern"}
    if unknown or not checks:
        raise ValueError(f"cannot express propertyNames {names} in CEL")
    return {"rule": f"self.all(k, {' && '.join(checks)})", "message": message}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        merged = {**rest, **target, **rest}  # the field's own description leads
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union in a structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        merged = {**_structural(options[0], defs), **rest}
        if merged.get("default", ...) is None:
            merged.pop("default")
        return _structural(merged, defs)
    out: dict[str, Any] = {}
    key_rules: list[dict[str, str]] = []
    # Structural schemas have neither propertyNames nor patternProperties: a map's key
    # bounds (pydantic's key type) become one CEL rule, its values additionalProperties.
    key_bounds = dict(node.get("propertyNames", {}))
    if "patternProperties" in node:
        ((pattern, values),) = node["patternProperties"].items()
        key_bounds["pattern"] = pattern
        out["additionalProperties"] = _structural(values, defs)
    if key_bounds:
        key_rules.append(_key_rule(key_bounds))
    for key, value in node.items():
        if key in _DROP or key in ("$defs", "propertyNames", "patternProperties"):
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020-12 number -> OpenAPI v3.0 bound plus boolean flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = _structural(value, defs)
    if key_rules:
        out["x-kubernetes-validations"] = [*out.get("x-kubernetes-validations", []), *key_rules]
    if out.get("x-kubernetes-preserve-unknown-fields") and out.get("additionalProperties") is True:
        out.pop("additionalProperties")
    if out.get("type") == "object" and out.get("additionalProperties") is False:
        out.pop("additionalProperties")
    is_object = out.get("type") == "object"
    if is_object and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "default" in out and out["default"] in ({}, []):
        out.pop("default")
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Structural schema of a whole object (apiVersion, kind, metadata, spec, status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    schema.pop("required", None)
    schema["required"] = ["spec"]
    return schema


CONDITION_READY = '.status.conditions[?(@.type=="Ready")].status'
CONDITION_FITS = '.status.conditions[?(@.type=="Fits")].status'
CONDITION_SCALING = '.status.conditions[?(@.type=="Scaling")].reason'

#: The scale subresource of SLMSpecialist: `kubectl scale slm/x`, HPA and KEDA target it;
#: the operator's Deployment follows spec.replicas (see docs/autoscaling.md).
SPECIALIST_SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}

KINDS: list[dict[str, Any]] = [
    {
        "model": SLMSpecialist,
        "plural": "slmspecialists",
        "singular": "slmspecialist",
        "short": ["slm", "slms"],
        "scale": SPECIALIST_SCALE,
        "columns": [
            {"name": "Ready", "type": "string", "jsonPath": CONDITION_READY},
            {"name": "Backend", "type": "string", "jsonPath": ".spec.model.backend"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
            {"name": "Scaling", "type": "string", "jsonPath": CONDITION_SCALING, "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": RouterPolicy,
        "plural": "routerpolicies",
        "singular": "routerpolicy",
        "short": ["rp"],
        "columns": [
            {"name": "Ready", "type": "string", "jsonPath": CONDITION_READY},
            {"name": "Model", "type": "string", "jsonPath": ".status.modelName"},
            {"name": "Tiers", "type": "string", "jsonPath": ".spec.cascade[*].name", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": Budget,
        "plural": "budgets",
        "singular": "budget",
        "short": ["slmbudget"],
        "columns": [
            {"name": "Ready", "type": "string", "jsonPath": CONDITION_READY},
            {"name": "State", "type": "string", "jsonPath": ".status.state"},
            {"name": "Step", "type": "string", "jsonPath": ".status.step"},
            {"name": "Percent", "type": "integer", "jsonPath": ".status.percent"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
    {
        "model": SLMPool,
        "plural": "slmpools",
        "singular": "slmpool",
        "short": ["slmpool"],
        "columns": [
            {"name": "Ready", "type": "string", "jsonPath": CONDITION_READY},
            {"name": "Fits", "type": "string", "jsonPath": CONDITION_FITS},
            {"name": "Requested", "type": "string", "jsonPath": ".status.requested"},
            {"name": "Capacity", "type": "string", "jsonPath": ".status.capacity"},
            {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    },
]


def crd(kind: dict[str, Any]) -> dict[str, Any]:
    model: type[BaseModel] = kind["model"]
    name = model.model_fields["kind"].default
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind['plural']}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": kind["plural"],
                "singular": kind["singular"],
                "shortNames": kind["short"],
                "categories": ["slmfleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        **({"scale": kind["scale"]} if "scale" in kind else {}),
                    },
                    "additionalPrinterColumns": kind["columns"],
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    header = "# Generated by `make crds` from operator/slmfleet/api; do not edit.\n"
    return {
        f"{GROUP}_{k['plural']}.yaml": header + yaml.safe_dump(crd(k), sort_keys=False, width=100)
        for k in KINDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("crds"))
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale CRDs (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
