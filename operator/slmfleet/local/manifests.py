"""The manifests of a local fleet, pure: read a folder as ``kubectl apply -f`` would,
validate the slmfleet objects with the API models (the CRD schemas' source)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..api.budget import Budget
from ..api.names import CONFIG_KEY, DNS_SUBDOMAIN
from ..api.policy import RouterPolicy
from ..api.specialist import SLMSpecialist
from ..render.fleet import Item

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_KINDS: dict[str, type[BaseModel]] = {
    "SLMSpecialist": SLMSpecialist,
    "RouterPolicy": RouterPolicy,
    "Budget": Budget,
}
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


class ManifestError(ValueError):
    """A manifest is unreadable or invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Document:
    source: str
    """``file.yaml#2``: where the document came from, for error messages."""
    body: dict[str, Any]


@dataclass
class FleetManifests:
    namespace: str
    specialists: list[Item] = field(default_factory=list)
    policies: list[Item] = field(default_factory=list)
    budgets: list[Item] = field(default_factory=list)
    examples: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """ConfigMap keys in the folder, for ``domain.examplesFrom``."""
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, name) -> keys of the Secrets in the folder (external tiers' API keys)."""
    skipped: list[str] = field(default_factory=list)
    """``Kind/name`` of objects that mean nothing locally (PVCs, Secrets, ...)."""


def default_namespace(path: Path | str) -> str:
    """The folder's name as a DNS label: ``examples/retail-support`` -> ``retail-support``."""
    p = Path(path).resolve()
    name = p.stem if p.is_file() else p.name
    label = _DNS_LABEL.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or "default"


def manifest_files(path: Path | str) -> list[Path]:
    """The manifest files of ``path`` (a file, or a folder's files, as ``kubectl apply -f``)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ManifestError(f"{p}: no such file or directory")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
    if not files:
        raise ManifestError(f"{p}: no manifests (*.yaml, *.yml, *.json) in this folder")
    return files


def read_documents(path: Path | str) -> list[Document]:
    """Every YAML document of every manifest file, ``List`` objects flattened."""
    docs: list[Document] = []
    for file in manifest_files(path):
        try:
            loaded = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{file}: not valid YAML: {exc}") from exc
        for index, body in enumerate(loaded):
            if body is None:
                continue
            where = f"{file.name}#{index + 1}"
            if not isinstance(body, dict):
                raise ManifestError(f"{where}: a manifest must be a mapping, got {type(body)}")
            if body.get("kind") == "List" or str(body.get("kind", "")).endswith("List"):
                for j, item in enumerate(body.get("items") or []):
                    docs.append(Document(f"{where}.items[{j}]", item))
            else:
                docs.append(Document(where, body))
    return docs


def _field_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:8]:
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def parse_fleet(docs: Iterable[Document], namespace: str) -> FleetManifests:
    """Validate the slmfleet objects with the API models (the CRD schemas' source)."""
    fleet = FleetManifests(namespace=namespace)
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        kind = doc.body.get("kind")
        meta = doc.body.get("metadata") or {}
        name = meta.get("name")
        api_version = str(doc.body.get("apiVersion", ""))
        if kind == "ConfigMap" and api_version == "v1":
            ns = meta.get("namespace") or namespace
            for key, text in (doc.body.get("data") or {}).items():
                fleet.examples[(ns, str(name), key)] = str(text)
            continue
        if kind == "Secret" and api_version == "v1":
            ns = meta.get("namespace") or namespace
            fleet.secrets[(ns, str(name))] = secret_data(doc, str(name))
            continue
        if kind not in _KINDS or not api_version.startswith("slmfleet.io/"):
            fleet.skipped.append(f"{kind}/{name}")
            continue
        if not name:
            raise ManifestError(f"{doc.source}: {kind} has no metadata.name")
        if (kind, name) in seen:
            raise ManifestError(
                f"{doc.source}: {kind} {name!r} is also defined in {seen[kind, name]}"
            )
        seen[kind, name] = doc.source
        body = {k: v for k, v in doc.body.items() if k not in ("metadata", "status")}
        try:
            obj = _KINDS[kind].model_validate(body)
        except ValidationError as exc:
            raise ManifestError(
                f"{doc.source}: {kind} {name!r} is invalid:\n{_field_errors(exc)}"
            ) from exc
        item = Item(
            namespace=meta.get("namespace") or namespace,
            name=name,
            spec=obj.spec,  # type: ignore[attr-defined]
            generation=1,
            labels=dict(meta.get("labels") or {}),
            created=f"{len(seen):06d}",  # file order decides contested model names
        )
        {
            "SLMSpecialist": fleet.specialists,
            "RouterPolicy": fleet.policies,
            "Budget": fleet.budgets,
        }[kind].append(item)
    if not fleet.specialists:
        raise ManifestError("no SLMSpecialist in the manifests: nothing to serve")
    if not fleet.policies:
        raise ManifestError("no RouterPolicy in the manifests: nothing routes to the specialists")
    return fleet


def secret_data(doc: Document, name: str) -> dict[str, str]:
    """A Secret manifest's keys (``stringData`` over base64 ``data``), names checked as
    the API server would: they become files of the router's secrets directory."""
    if not re.fullmatch(DNS_SUBDOMAIN, name) or len(name) > 253:
        raise ManifestError(f"{doc.source}: Secret {name!r}: not a valid Secret name")
    out: dict[str, str] = {}
    try:
        for key, value in (doc.body.get("data") or {}).items():
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"{doc.source}: Secret {name!r}: data is not base64 text") from exc
    out.update({str(k): str(v) for k, v in (doc.body.get("stringData") or {}).items()})
    for key in out:
        if not re.fullmatch(CONFIG_KEY, key):
            raise ManifestError(f"{doc.source}: Secret {name!r}: invalid key {key!r}")
    return out


def write_secrets(fleet: FleetManifests, root: Path) -> Path:
    """``root/<namespace>/<name>/<key>`` for the router's ``--secrets dir:root``: the
    local equivalent of the API's namespaced Secrets (owner-only permissions)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for (namespace, name), data in fleet.secrets.items():
        folder = root / namespace / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for key, value in data.items():
            path = folder / key
            path.touch(mode=0o600)
            path.write_text(value)
    return root


def load_fleet(path: Path | str, namespace: str | None = None) -> FleetManifests:
    return parse_fleet(read_documents(path), namespace or default_namespace(path))
