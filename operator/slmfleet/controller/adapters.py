"""LoRA adapter specialists: thin glue between the specialist handlers and
``render/lora.py``.

An adapter has no children: its base's Deployment serves it. So the base's children
are rendered with the adapters naming it (``adapters_for``), the base is re-applied when
an adapter comes, changes or goes (``touch_base``), and an adapter's status follows its
base's Deployment (``adapter_status_of``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..api.specialist import SLMSpecialistSpec
from ..render import labels as L
from ..render.lora import Adapter, adapter_status, adapters_of, base_problem
from .runtime import Key, Runtime


def _specs(rt: Runtime, namespace: str) -> dict[str, SLMSpecialistSpec]:
    specs = {}
    for (ns, name), body in rt.store.bodies().items():
        if ns != namespace or body["metadata"].get("deletionTimestamp"):
            continue
        meta = body["metadata"]
        try:
            specs[name] = rt.specs.get(
                ("SLMSpecialist", ns, name, meta.get("generation")),
                lambda b=body: SLMSpecialistSpec.model_validate(b["spec"]),
            )
        except ValidationError:
            continue
    return specs


def base_of(body: dict[str, Any] | None) -> str | None:
    adapter = (((body or {}).get("spec") or {}).get("model") or {}).get("adapter") or {}
    return adapter.get("base")


def adapters_for(rt: Runtime, namespace: str, base: str) -> list[Adapter]:
    """The adapters a base serves: those naming it whose base is valid."""
    specs = _specs(rt, namespace)
    return [a for a in adapters_of(base, specs) if base_problem(a.name, a.spec, specs) is None]


def adapter_status_of(rt: Runtime, key: Key, body: dict[str, Any], previous: str | None) -> dict:
    namespace, name = key
    specs = _specs(rt, namespace)
    spec = specs.get(name)
    assert spec is not None and spec.model.adapter is not None
    base = spec.model.adapter.base
    base_state = rt.store.specialists.get((namespace, base))
    configmap = rt.store.children.get(("ConfigMap", namespace, L.model_config_name(base)))
    return adapter_status(
        name=name,
        namespace=namespace,
        base=base,
        generation=body["metadata"].get("generation"),
        problem=base_problem(name, spec.model.adapter, specs),
        base_deployment=base_state.deployment if base_state else None,
        base_files=(configmap or {}).get("data"),
        previous_reason=previous,
    )


def adapter_keys(rt: Runtime, namespace: str, base: str) -> list[Key]:
    """Adapters naming ``base`` (valid or not): their status follows the base's."""
    return [
        (ns, n)
        for (ns, n), b in rt.store.bodies().items()
        if ns == namespace and base_of(b) == base
    ]
