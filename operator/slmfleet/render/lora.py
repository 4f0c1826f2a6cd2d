"""LoRA adapters on a vLLM base: what the base's Triton model gets, and how adapters are
checked against their base. Pure.

Rendered exactly as Triton's vLLM backend documents multi-LoRA
(vllm_backend docs/llama_multi_lora_tutorial.md, src/model.py ``_setup_lora``):

* ``model.json`` (the engine arguments) gets ``enable_lora: true``, ``max_lora_rank``
  (the largest adapter rank) and ``max_loras`` (adapters one batch may mix);
* ``1/multi_lora.json`` maps each LoRA name to the local directory of its weights (the
  backend reads it from the model's version directory when ``enable_lora`` is true, and
  refuses to start without it);
* a request names its adapter with ``lora_name`` in ``sampling_parameters`` (the
  router's codec adds it for an adapter specialist; ``router/backends.py``).

An adapter's weights are fetched into ``/models/<base>/1/loras/<adapter>`` by one init
container per adapter on the base's Pods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.specialist import AdapterSpec, SLMSpecialistSpec
from .conditions import ready_set
from .labels import grpc_endpoint
from .specialist_status import deployment_progress

#: Where an adapter's weights live inside the base's Triton container.
LORA_DIR = "{root}/{base}/1/loras/{adapter}"
MODEL_ROOT = "/models"
#: The vLLM backend's documented multi-LoRA keys (model.json) and file (version dir).
LORA_ENGINE_KEYS = ("enable_lora", "max_lora_rank", "max_loras")
MULTI_LORA_FILE = "multi_lora.json"
#: Most adapters one batch mixes (vLLM's max_loras; more adapters still load, they queue).
MAX_LORAS_PER_BATCH = 8


@dataclass(frozen=True)
class Adapter:
    name: str
    """The adapter specialist's name: its LoRA name in requests."""
    spec: AdapterSpec


def adapters_of(base: str, specialists: Mapping[str, SLMSpecialistSpec]) -> list[Adapter]:
    """The adapters naming ``base`` (same namespace), by name."""
    return [
        Adapter(name, s.model.adapter)
        for name, s in sorted(specialists.items())
        if s.model.adapter is not None and s.model.adapter.base == base
    ]


def lora_engine_args(adapters: Sequence[Adapter]) -> dict[str, object]:
    if not adapters:
        return {}
    return {
        "enable_lora": True,
        "max_lora_rank": max(a.spec.rank for a in adapters),
        "max_loras": min(len(adapters), MAX_LORAS_PER_BATCH),
    }


def multi_lora_json(base: str, adapters: Sequence[Adapter], root: str = MODEL_ROOT) -> str:
    """``root``: the model repository as the server sees it (``/models`` in the Pod)."""
    paths = {a.name: LORA_DIR.format(root=root, base=base, adapter=a.name) for a in adapters}
    return json.dumps(paths, indent=2, sort_keys=True) + "\n"


def base_problem(
    name: str, adapter: AdapterSpec, specialists: Mapping[str, SLMSpecialistSpec]
) -> str | None:
    """Why ``name``'s base cannot serve it (the message names the field), or None."""
    base = specialists.get(adapter.base)
    where = "spec.model.adapter.base"
    if adapter.base == name:
        return f"{where}: an adapter cannot be its own base"
    if base is None:
        return f"{where}: no SLMSpecialist named {adapter.base!r} in this namespace"
    if base.model.adapter is not None:
        return f"{where}: {adapter.base!r} is itself an adapter; name the whole model"
    if base.model.backend != "vllm":
        return (
            f"{where}: {adapter.base!r} is served by backend {base.model.backend}; "
            "LoRA adapters need a vllm base"
        )
    if base.serving.pool:
        return f"{where}: {adapter.base!r} is a pool member; adapters need a base of its own"
    return None


def adapter_status(
    *,
    name: str,
    namespace: str,
    base: str,
    generation: int | None,
    problem: str | None,
    base_deployment: dict[str, Any] | None,
    base_files: Mapping[str, str] | None,
    previous_reason: str | None = None,
) -> dict[str, Any]:
    """An adapter's status: its base's Deployment decides, once the base's rendered
    ``multi_lora.json`` names the adapter (``base_files``: the base's model ConfigMap)."""
    if problem:
        ready, stalled, reason, message = False, True, "AdapterBaseInvalid", problem
    else:
        listed = json.loads((base_files or {}).get(MULTI_LORA_FILE) or "{}")
        if name not in listed:
            ready, stalled, reason, message = (
                False, False, "AdapterPending", "waiting for the base to list the adapter"
            )  # fmt: skip
        else:
            ready, stalled, reason, message = deployment_progress(base_deployment, previous_reason)
            message = f"base: {message}"
    dep = (base_deployment or {}).get("status", {})
    return {
        "observedGeneration": generation,
        "conditions": ready_set(ready, reason, message, generation, stalled=stalled),
        "replicas": dep.get("replicas", 0),
        "readyReplicas": dep.get("readyReplicas", 0),
        "endpoint": grpc_endpoint(base, namespace),
        "tritonModel": base,
    }
