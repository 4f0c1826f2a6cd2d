"""The human-review queue: cases (pure decisions) and the service around the store."""

from .cases import Case, Change, Claim, Escalate, Refusal, Release, Resolve, decide
from .service import CaseInput, HumanOutcome, ReviewService

__all__ = [
    "Case",
    "CaseInput",
    "Change",
    "Claim",
    "Escalate",
    "HumanOutcome",
    "Refusal",
    "Release",
    "Resolve",
    "ReviewService",
    "decide",
]
