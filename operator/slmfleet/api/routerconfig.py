"""The router configuration: what the operator renders and the router serves.

One validated document, shared by both sides. Specialists are identified by
``namespace/name`` ids; the renderer resolves every name in a policy (targets, rules,
cascade tiers) into ids, so the router sees one flat, already-resolved world.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import KubeModel
from .budget import PerRequestLimits, SpendWindow
from .policy import CascadeTier, FallbackSpec, RoutingSpec
from .specialist import Backend, CostSpec, ReasoningSpec

CONFIG_KEY = "router.json"


class DomainConfig(KubeModel):
    description: str = ""
    """What the specialist handles."""
    keywords: list[str] = Field(default_factory=list)
    """Words that suggest the domain."""
    examples: list[str] = Field(default_factory=list)
    """Example requests, inline and from the ConfigMap, merged."""
    labels: list[str] = Field(default_factory=list)
    """Output labels the model answers with."""


class SpecialistConfig(KubeModel):
    id: str = Field(pattern=r"^[a-z0-9-.]+/[a-z0-9-.]+$")
    """namespace/name of the SLMSpecialist."""
    endpoint: str
    """Triton gRPC endpoint, host:port. In a cluster, the specialist's headless Service
    (``<service>.<namespace>.svc:<port>``): the router balances over the Pods its
    EndpointSlices list."""
    replicas: list[str] = Field(default_factory=list)
    """Triton gRPC endpoints (host:port) of the specialist's replicas when they are known
    without discovery (the local fleet lists its own servers); requests are balanced over
    them. Empty: the Pods behind ``endpoint``."""
    triton_model: str
    """Model name inside Triton."""
    backend: Backend
    """Triton backend (selects the request tensors)."""
    ready: bool = False
    """Whether the specialist reported Ready; unready targets are skipped."""
    domain: DomainConfig = Field(default_factory=DomainConfig)
    """The specialist's territory."""
    cost: CostSpec = Field(default_factory=CostSpec)
    """Prices for cost-aware routing and spend."""
    reasoning: ReasoningSpec | None = None
    """Reasoning markers, when the model thinks before answering."""
    context_length: int = 4096
    """Context length in tokens."""


class PolicyConfig(KubeModel):
    model_name: str
    """Name clients pass as `model`."""
    id: str
    """namespace/name of the RouterPolicy."""
    specialists: list[str]
    """Specialist ids routed across (resolved; may include unready ones)."""
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    """Rules (specialists as ids), semantic and cost-aware routing."""
    cascade: list[CascadeTier]
    """Tiers, specialist tiers as ids."""
    fallback: FallbackSpec | None = None
    """Out-of-domain and error fallbacks."""
    budgets: list[str] = Field(default_factory=list)
    """Ids of the Budgets that apply."""


class BudgetConfig(KubeModel):
    id: str
    """namespace/name of the Budget."""
    per_request: PerRequestLimits | None = None
    """Caps on each request."""
    spend: list[SpendWindow] = Field(default_factory=list)
    """Spend windows."""
    policies: list[str] = Field(default_factory=list)
    """Model names of the policies it covers."""
    specialists: list[str] = Field(default_factory=list)
    """Ids of the specialists it covers."""


class RouterConfig(KubeModel):
    """Everything the router serves, rendered by the operator."""

    version: Literal[1] = 1
    policies: list[PolicyConfig] = Field(default_factory=list)
    specialists: list[SpecialistConfig] = Field(default_factory=list)
    budgets: list[BudgetConfig] = Field(default_factory=list)

    def specialist(self, sid: str) -> SpecialistConfig | None:
        return next((s for s in self.specialists if s.id == sid), None)
