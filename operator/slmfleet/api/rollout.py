"""Rollouts of a RouterPolicy: a candidate specialist beside an incumbent, as a canary
(a weighted share of the incumbent's traffic, rolled back automatically when it does
worse) or a shadow (a share mirrored to it, answers compared, never returned)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import KubeModel, cel
from .names import SpecialistName


class Rollback(KubeModel):
    """When the router stops a canary: a one-sided test that the candidate's rate of
    bad outcomes (its tier failed, or its answer was not accepted and escalated) exceeds
    the incumbent's by more than ``margin``."""

    enabled: bool = True
    """Roll the canary back automatically (the router stops sending it traffic)."""
    margin: float = Field(default=0.05, ge=0.0, le=1.0)
    """How much higher (absolute) the candidate's bad-outcome rate may be."""
    min_samples: int = Field(default=50, ge=10, le=1_000_000)
    """Requests each arm needs before the test is made."""
    confidence: float = Field(default=0.95, ge=0.5, le=0.9999)
    """Confidence of the one-sided test (0.95: a 5% chance of rolling back a candidate
    that is in fact within the margin)."""


class Rollout(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.candidate != self.specialist",
                    "candidate must be another specialist than the incumbent",
                    ".candidate",
                )
            ]
        }
    }

    specialist: SpecialistName
    """The incumbent: a specialist this policy routes to (of this namespace)."""
    candidate: SpecialistName
    """The specialist being rolled out (of this namespace), e.g. a new fine-tune."""
    mode: Literal["canary", "shadow"] = "canary"
    """canary: the candidate answers ``percent`` of the incumbent's requests; shadow:
    it receives a copy of ``percent`` of them, its answers are logged and compared,
    never returned."""
    percent: float = Field(ge=0.0, le=100.0)
    """Share of the incumbent's requests, in percent (0-100)."""
    rollback: Rollback = Field(default_factory=Rollback)
    """Automatic rollback of a canary (ignored for shadows)."""
