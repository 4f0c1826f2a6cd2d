"""The slmfleet API: pydantic models, the one source of the CRD schemas and router config."""

from .base import API_VERSION, GROUP, VERSION, Condition
from .budget import Budget, BudgetSpec, BudgetStatus
from .policy import RouterPolicy, RouterPolicySpec, RouterPolicyStatus
from .routerconfig import RouterConfig
from .specialist import SLMSpecialist, SLMSpecialistSpec, SLMSpecialistStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Budget",
    "BudgetSpec",
    "BudgetStatus",
    "Condition",
    "RouterConfig",
    "RouterPolicy",
    "RouterPolicySpec",
    "RouterPolicyStatus",
    "SLMSpecialist",
    "SLMSpecialistSpec",
    "SLMSpecialistStatus",
]
