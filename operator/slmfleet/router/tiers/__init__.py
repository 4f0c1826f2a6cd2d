"""Cascade tier adapters (specialist, external endpoint, human review) over one
streaming loop; the engine sequences them."""

from .base import Answer, Emit, Outcome, RequestRun, Tier, TierCall
from .external import ExternalTier
from .human import HumanTier
from .specialist import SpecialistTier

__all__ = [
    "Answer",
    "Emit",
    "ExternalTier",
    "HumanTier",
    "Outcome",
    "RequestRun",
    "SpecialistTier",
    "Tier",
    "TierCall",
]
