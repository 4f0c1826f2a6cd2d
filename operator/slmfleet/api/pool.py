"""SLMPool: one Triton server (per replica) that serves several SLMSpecialists.

Why a kind of its own rather than ``spec.serving.pool`` settings repeated on every
member: the server has a shape (image, GPUs, memory, replicas) that belongs to no single
member, and its capacity is what members are checked against. A specialist joins by
naming the pool in ``spec.serving.pool``; a specialist has one such field, so no two
pools can ever claim the same specialist (see docs/pools.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Condition, KubeModel, cel, list_map
from .names import SPECIALIST_NAME, SpecialistName
from .specialist import IMAGE_PATTERN, MEMORY_MAX_LENGTH, MEMORY_QUANTITY, GPUToleration

#: A pool's name: the same shape as a specialist's (children are named slm-pool-<name>).
POOL_NAME = SPECIALIST_NAME


class PoolResources(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.gpu == 0 || has(self.gpuMemory)",
                    "a pool with GPUs declares gpuMemory, the GPU memory its members share",
                    ".gpuMemory",
                )
            ]
        }
    }

    gpu: int = Field(default=0, ge=0, le=16)
    """Whole GPUs per replica (nvidia.com/gpu); 0: a CPU pool."""
    gpu_memory: str | None = Field(
        default=None, pattern=MEMORY_QUANTITY, max_length=MEMORY_MAX_LENGTH
    )
    """GPU memory of one replica, all its GPUs together (e.g. 80Gi): what the members'
    ``resources.gpuMemory`` are checked against. Required with ``gpu``."""
    cpu: str = Field(default="2", pattern=r"^[0-9]+(\.[0-9]+)?m?$", max_length=MEMORY_MAX_LENGTH)
    """CPU request per replica (Kubernetes quantity)."""
    memory: str = Field(default="8Gi", pattern=MEMORY_QUANTITY, max_length=MEMORY_MAX_LENGTH)
    """Memory request and limit per replica; in a CPU pool, what the members'
    ``resources.memory`` are checked against."""


class ResidencySpec(KubeModel):
    overcommit: bool = False
    """false: members that do not fit together are refused (``Fits=False``), the others
    stay loaded. true: members may need more memory than the pool has; the most recently
    used stay loaded and a cold member is loaded on its first request, unloading the
    least recently used idle ones (requests for it wait or cascade as for scale from
    zero). A member larger than the whole pool is refused either way."""


class SLMPoolSpec(KubeModel):
    image: str | None = Field(default=None, max_length=512, pattern=IMAGE_PATTERN)
    """tritonserver image; a default matching the members' backends when unset."""
    fetcher_image: str | None = Field(default=None, max_length=512, pattern=IMAGE_PATTERN)
    """Image of the repository sidecar that fetches members' artifacts; the chart's
    default when unset."""
    replicas: int = Field(default=1, ge=1, le=100)
    """Triton replicas; every replica holds the same members loaded."""
    resources: PoolResources = Field(default_factory=PoolResources)
    """Resources of each replica: the capacity members share."""
    residency: ResidencySpec = Field(default_factory=ResidencySpec)
    """What happens when the members need more memory than the pool has."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels the Pods must land on."""
    tolerations: list[GPUToleration] = Field(default_factory=list, max_length=32)
    """Taints the Pods tolerate."""
    model_cache_size: str = Field(default="100Gi", pattern=r"^[0-9]+([EPTGMK]i?)?$")
    """Size limit of the emptyDir holding every member's artifact."""


MemberState = Literal["Loaded", "Loading", "Draining", "Unloaded", "Refused", "Failed", "Pending"]


class PoolMemberStatus(KubeModel):
    name: SpecialistName
    """The member SLMSpecialist (same namespace)."""
    memory: str | None = None
    """The memory it declares (GPU memory in a GPU pool)."""
    state: MemberState = "Pending"
    """Loaded (servable), Loading, Draining (chosen to be unloaded: requests wait while
    the router learns it), Unloaded (evicted or not yet used: a request loads it),
    Refused (does not fit: see message), Failed (Triton refused to load it), Pending
    (not yet seen by a replica)."""
    message: str = Field(default="", max_length=1024)
    """Why, for Refused, Failed and Unloaded."""
    last_load_seconds: float | None = None
    """How long its last load took (cold-load time)."""
    last_used: str | None = None
    """When the router last had a request for it (RFC 3339)."""


class SLMPoolStatus(KubeModel):
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    """Ready (the Deployment) and Fits (the members' memory, with the arithmetic)."""
    replicas: int | None = None
    """Replicas that exist."""
    ready_replicas: int | None = None
    """Replicas that are ready."""
    endpoint: str | None = None
    """gRPC endpoint of the pool's Service (host:port); members are its models."""
    capacity: str | None = None
    """Memory the members share (per replica)."""
    requested: str | None = None
    """Memory the members declare together."""
    members: list[PoolMemberStatus] = Field(
        default_factory=list, json_schema_extra=list_map("name"), max_length=1000
    )
    """Per-member placement and residency."""


NAME_RULE = cel(
    f"self.metadata.name.matches('{POOL_NAME}')",
    "metadata.name must be a DNS label of at most 52 characters starting with a letter "
    "(children are named slm-pool-<name>)",
)


class SLMPool(KubeModel):
    """A Triton server shared by several SLMSpecialists (its members)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [NAME_RULE]}
    }

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["SLMPool"] = "SLMPool"
    spec: SLMPoolSpec = Field(default_factory=SLMPoolSpec)
    status: SLMPoolStatus | None = None
