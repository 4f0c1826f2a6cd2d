"""Shared pieces of the slmfleet API models.

The pydantic models in this package are the one source of truth: they generate the
CRD schemas (``slmfleet.crdgen``) and validate the router configuration. Attribute
docstrings become schema descriptions, so ``kubectl explain`` shows them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .names import API_VERSION, GROUP, VERSION, ConfigKey, DnsSubdomain

__all__ = ["API_VERSION", "GROUP", "VERSION"]


class KubeModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``field_path`` names the field in errors."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def list_map(*keys: str) -> dict[str, object]:
    """Schema extension making a list a map keyed by ``keys``: the API server itself
    refuses duplicates, naming the field, and server-side apply merges by key."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class SecretKeyRef(KubeModel):
    """A key in a Secret of the resource's own namespace (never another's). Secrets
    never appear inline; the name and key are Kubernetes names, never paths."""

    name: DnsSubdomain
    """Name of the Secret, in the namespace of the object holding the reference."""
    key: ConfigKey
    """Key inside the Secret."""


class ConfigMapKeyRef(KubeModel):
    """A key in a ConfigMap of the resource's own namespace."""

    name: DnsSubdomain
    """Name of the ConfigMap, in the namespace of the object holding the reference."""
    key: ConfigKey
    """Key inside the ConfigMap."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """A standard Kubernetes condition (metav1.Condition), read by kubectl wait and kstatus."""

    type: str = Field(max_length=316)
    """Type of condition, e.g. Ready."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(max_length=1024)
    """One CamelCase word saying why the condition has its status."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed from."""


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


LabelKey = Annotated[str, Field(min_length=1, max_length=317)]
LabelValue = Annotated[str, Field(max_length=63)]


class LabelSelectorRequirement(KubeModel):
    key: LabelKey
    """Label key the selector applies to."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: list[LabelValue] = Field(default_factory=list, max_length=64)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(KubeModel):
    """A standard label selector; an empty selector matches nothing here, on purpose."""

    match_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    """Labels that must all be present with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)
    """Set-based requirements, all of which must hold."""

    def matches(self, labels: dict[str, str]) -> bool:
        if not self.match_labels and not self.match_expressions:
            return False
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            value = labels.get(req.key)
            ok = {
                "In": present and value in req.values,
                "NotIn": not present or value not in req.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[req.operator]
            if not ok:
                return False
        return True
