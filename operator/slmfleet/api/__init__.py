"""The slmfleet API: pydantic models, the one source of the CRD schemas and router config."""

from .base import Condition
from .budget import Budget, BudgetSpec, BudgetStatus
from .fragments import Fragment, assemble
from .names import API_VERSION, GROUP, VERSION
from .policy import RouterPolicy, RouterPolicySpec, RouterPolicyStatus
from .pool import SLMPool, SLMPoolSpec, SLMPoolStatus
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
    "Fragment",
    "RouterConfig",
    "RouterPolicy",
    "RouterPolicySpec",
    "RouterPolicyStatus",
    "SLMPool",
    "SLMPoolSpec",
    "SLMPoolStatus",
    "SLMSpecialist",
    "SLMSpecialistSpec",
    "SLMSpecialistStatus",
    "assemble",
]
