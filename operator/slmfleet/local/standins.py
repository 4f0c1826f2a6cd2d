"""Which CPU stand-in serves each SLMSpecialist locally, and the stand-ins' code for a
claim (``slmfleet standins``). See fleet.py for the mapping rules."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ..render.fleet import Item
from .manifests import FleetManifests, ManifestError
from .models import StandIn
from .models.standin import KINDS


@dataclass(frozen=True)
class StandInChoice:
    model: str
    """Model name inside Triton (the specialist's name)."""
    stand_in: StandIn
    why: str
    """One line for the progress output."""


def _label(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "answer"


def stand_in_for(
    item: Item, examples: dict[tuple[str, str, str], str] | None = None
) -> StandInChoice:
    spec = item.spec
    model = spec.model
    params = dict(model.parameters)
    kind = params.pop("standin", None)
    if model.backend == "python" and kind is not None:
        if kind not in KINDS:
            raise ManifestError(
                f"SLMSpecialist {item.name!r}: model.parameters.standin must be one of "
                f"{', '.join(KINDS)}, got {kind!r}"
            )
        return StandInChoice(item.name, StandIn(kind, params), f"{kind} stand-in")
    backend = f"{model.backend}" + (
        f"/{model.quantization}" if model.quantization != "none" else ""
    )
    # TensorRT-LLM specialists get a stand-in that speaks the tensorrt_llm_bls contract,
    # so the router's TensorRT-LLM codec is the one exercised locally too.
    contract = "tensorrtllm" if model.backend == "tensorrtllm" else "python"
    if model.reasoning is not None:
        stand_in = StandIn.reasoner(
            start_marker=model.reasoning.start_marker, end_marker=model.reasoning.end_marker
        )
        stand_in = replace(stand_in, contract=contract)
        return StandInChoice(item.name, stand_in, f"reasoner stand-in for {backend} {model.uri}")
    if model.backend == "onnxruntime" and spec.domain.labels:
        # A classifier answers with one of its labels: a domain stand-in over the label
        # names (the real model needs its .onnx file; see local/models/onnx_classifier).
        labels = {lb: [lb.replace("_", " ")] for lb in spec.domain.labels}
        stand_in = StandIn.domain(labels, dict.fromkeys(labels, "(label)"))
        return StandInChoice(
            item.name, stand_in, f"label stand-in for {backend} {model.uri} (its labels)"
        )
    texts = list(spec.domain.examples)
    if spec.domain.examples_from:
        ref = spec.domain.examples_from
        text = (examples or {}).get((item.namespace, ref.name, ref.key), "")
        texts += [line.strip() for line in text.splitlines() if line.strip()]
    texts = texts or [k for k in spec.domain.keywords if k.strip()]
    if not texts:  # no territory of its own: a general model (an escalation tier)
        return StandInChoice(
            item.name,
            StandIn("generalist", {"display_name": item.name}, contract),
            f"generalist stand-in for {backend} {model.uri} (no domain examples or keywords)",
        )
    label = _label(item.name)
    reply = spec.domain.description or f"an answer from {item.name}"
    stand_in = replace(StandIn.domain({label: texts}, {label: reply}), contract=contract)
    return StandInChoice(item.name, stand_in, f"domain stand-in for {backend} {model.uri}")


def stand_ins(fleet: FleetManifests) -> list[StandInChoice]:
    return [stand_in_for(s, fleet.examples) for s in fleet.specialists]


def _claim_target(root: Path, sub: str, name: str) -> Path:
    """``root/sub``, refusing a ``sub`` that would land outside ``root``."""
    path = PurePosixPath(sub)
    target = root / path
    if (
        path.is_absolute()
        or ".." in path.parts
        or not target.resolve().is_relative_to(root.resolve())
    ):
        raise ManifestError(
            f"SLMSpecialist {name!r}: model.uri path {sub!r} must stay inside the claim "
            "(no '..' components, not absolute)"
        )
    return target


def export_stand_ins(
    fleet: FleetManifests, root: Path | str, claim: str | None = None
) -> list[Path]:
    """Write the code of every python-backend stand-in whose URI is ``pvc://CLAIM/PATH``
    into ``root/PATH/`` (``model.py`` + ``standin.py``): the content the fetcher copies
    into Triton's version directory. Returns the directories written."""
    from .models import _FILES, _SOURCES

    written = []
    for item in fleet.specialists:
        model = item.spec.model
        if model.backend != "python" or "standin" not in model.parameters:
            continue
        if not model.uri.startswith("pvc://"):
            continue
        uri_claim, _, sub = model.uri.removeprefix("pvc://").partition("/")
        if claim is not None and uri_claim != claim:
            continue
        target = _claim_target(Path(root), sub, item.name)
        target.mkdir(parents=True, exist_ok=True)
        for filename in _FILES:
            shutil.copyfile(_SOURCES / filename, target / filename)
        written.append(target)
    return written
