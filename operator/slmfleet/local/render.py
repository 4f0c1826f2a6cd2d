"""What the operator would render for a local fleet, pure: every SLMSpecialist a CPU
stand-in on the local Triton, Ready, and the router configuration for them.

Mapping of SLMSpecialists to stand-ins:

* ``python`` backend with ``model.parameters.standin`` set (domain, reasoner, extractor,
  generalist, failing): exactly that stand-in with those parameters: the model the
  cluster serves from the same manifest;
* any other specialist (vLLM, TensorRT-LLM, ONNX, or a python model of your own): a
  ``reasoner`` when ``model.reasoning`` is set, else a ``domain`` stand-in that
  recognises the specialist's domain examples (keywords and description when there are
  none) and answers with the specialist's name as its label.

Locally every stand-in is a python-backend model, so the router config says ``python``
for every specialist whatever the manifest's backend, except TensorRT-LLM ones: their
stand-ins honour the ``tensorrt_llm_bls`` contract (the config the operator renders),
so the router config keeps ``tensorrtllm`` and its codec is exercised. ONNX
classifiers are domain stand-ins here (``python``): a real one needs its model file.
"""

from __future__ import annotations

from ..api.routerconfig import RouterConfig
from ..render.fleet import Item, render_fleet
from .manifests import FleetManifests, ManifestError


def local_router_config(
    fleet: FleetManifests, endpoint: str, replicas: list[str] | None = None
) -> RouterConfig:
    """What the operator would render with every specialist Ready on ``endpoint``; with
    ``replicas`` (several local Triton servers, ``endpoint`` among them) every
    specialist lists them, so the router balances over all of them. Secrets are not
    checked here: the router reports a missing one per request."""
    ready = [
        Item(
            namespace=s.namespace,
            name=s.name,
            # Locally every specialist is a stand-in model of its own: pool members and
            # LoRA adapters too (adapters on a real base: tests/integration/test_lora_standin).
            spec=s.spec.model_copy(
                update={
                    "model": s.spec.model.model_copy(
                        update={"backend": _local_backend(s), "adapter": None}
                    )
                }
            ),
            generation=s.generation,
            labels=s.labels,
            status={"conditions": [{"type": "Ready", "status": "True"}]},
            created=s.created,
        )
        for s in fleet.specialists
    ]
    rendered = render_fleet(
        ready, fleet.policies, fleet.budgets, fleet.examples, endpoint_of=lambda _ns, _n: endpoint
    )
    problems = []
    for pid, status in rendered.policy_status.items():
        for cond in status.get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                problems.append(f"RouterPolicy {pid}: {cond.get('reason')}: {cond.get('message')}")
    for sid, problem in rendered.specialist_problems.items():
        problems.append(f"SLMSpecialist {sid}: {problem.reason}: {problem.message}")
    if problems:
        raise ManifestError("\n".join(problems))
    if not replicas or len(replicas) < 2:
        return rendered.config
    specialists = [
        s.model_copy(update={"replicas": list(replicas)}) for s in rendered.config.specialists
    ]
    return rendered.config.model_copy(update={"specialists": specialists})


def _local_backend(item: Item) -> str:
    """The backend the local stand-in speaks (see the module docstring)."""
    return "tensorrtllm" if item.spec.model.backend == "tensorrtllm" else "python"
