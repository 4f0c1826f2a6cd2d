"""CPU stand-ins for the fleet's models, served by the real Triton Python backend.

Each stand-in is one ``model.py`` (Triton glue, shared) plus ``standin.py`` (pure
behaviour) in ``<root>/<name>/1/``, and the ``config.pbtxt`` the operator itself
renders for a ``python``-backend SLMSpecialist, so the router is tested against the
exact tensor contract it meets in a cluster. The behaviour is chosen by the
``standin`` parameter; the other parameters configure it (see standin.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...api.specialist import ModelSpec, ReasoningSpec
from ...render.triton import model_repository_files

__all__ = ["StandIn", "StandInKind", "default_fleet", "write_model_repository"]

StandInKind = Literal["domain", "reasoner", "extractor", "generalist", "failing"]

_SOURCES = Path(__file__).parent
_FILES = ("model.py", "standin.py")


@dataclass(frozen=True)
class StandIn:
    """One stand-in model: its behaviour and that behaviour's parameters."""

    kind: StandInKind
    parameters: Mapping[str, str] = field(default_factory=dict)
    contract: Literal["python", "tensorrtllm"] = "python"
    """Whose tensors the stand-in honours: the vLLM contract its ``python`` config
    declares (plus ``confidence``), or the ``tensorrt_llm_bls`` contract the operator
    renders for a ``tensorrtllm`` specialist (the BLS model is a Python-backend model
    too, so the same config serves it)."""

    @classmethod
    def domain(
        cls,
        examples: Mapping[str, list[str]],
        replies: Mapping[str, str] | None = None,
        **extra: str,
    ) -> StandIn:
        """A classifier over labelled example utterances (label -> examples)."""
        params = {"examples": json.dumps(dict(examples), sort_keys=True)}
        if replies:
            params["replies"] = json.dumps(dict(replies), sort_keys=True)
        return cls("domain", params | extra)

    @classmethod
    def reasoner(cls, think_tokens: int = 200, **extra: str) -> StandIn:
        return cls("reasoner", {"think_tokens": str(think_tokens)} | extra)

    def model_spec(self) -> ModelSpec:
        """The ModelSpec an SLMSpecialist serving this stand-in would carry."""
        extra = {"bls_instance_count": "1"} if self.contract == "tensorrtllm" else {}
        return ModelSpec(
            uri=f"pvc://slmfleet-standins/{self.kind}",
            backend=self.contract,
            parameters={**extra, **self.parameters, "standin": self.kind},
            reasoning=ReasoningSpec() if self.kind == "reasoner" else None,
        )


def write_model_repository(root: Path, models: Mapping[str, StandIn]) -> Path:
    """Write ``<root>/<name>/config.pbtxt`` and ``<root>/<name>/1/{model,standin}.py``.

    Existing model directories of the same names are replaced; returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, stand_in in models.items():
        model_dir = root / name
        if model_dir.exists():
            shutil.rmtree(model_dir)
        (model_dir / "1").mkdir(parents=True)
        for filename, text in model_repository_files(name, stand_in.model_spec()).items():
            (model_dir / filename).write_text(text)
        for filename in _FILES:
            shutil.copyfile(_SOURCES / filename, model_dir / "1" / filename)
    return root


BILLING_EXAMPLES = {
    "refund": [
        "I want a refund for my last invoice",
        "please refund the duplicate charge on my card",
        "how do I get my money back for the cancelled subscription",
        "you charged me twice, I need a refund",
    ],
    "invoice": [
        "can you send me a copy of my invoice",
        "where do I download last month's invoice",
        "the invoice shows the wrong billing address",
        "I need a VAT invoice for my company",
    ],
    "payment_method": [
        "how do I update my credit card",
        "change the payment method on my account",
        "my card expired, how do I add a new one",
        "can I pay by bank transfer instead of card",
    ],
}

SHIPPING_EXAMPLES = {
    "tracking": [
        "where is my package",
        "track my parcel, it has not arrived yet",
        "the tracking number shows no updates for a week",
        "when will my order be delivered",
    ],
    "delivery_address": [
        "change the delivery address of my shipment",
        "I moved, please ship to my new address",
        "can the courier leave the parcel with my neighbour",
        "deliver to my office instead of home",
    ],
    "damaged": [
        "my package arrived damaged",
        "the box was crushed and the item is broken",
        "the parcel was opened and items are missing",
        "the delivery arrived wet and ruined",
    ],
}


def default_fleet() -> dict[str, StandIn]:
    """The fleet tests and demos run: two domain specialists plus one of each other kind."""
    return {
        "domain-billing": StandIn.domain(BILLING_EXAMPLES),
        "domain-shipping": StandIn.domain(SHIPPING_EXAMPLES),
        "reasoner": StandIn.reasoner(),
        "extractor": StandIn("extractor"),
        "generalist": StandIn("generalist"),
        "failing": StandIn("failing"),
    }
