"""SLMSpecialist: one small model, served by Triton, with the territory it is good at."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .autoscaling import AUTOSCALING_RULES, AutoscalingSpec
from .base import Condition, ConfigMapKeyRef, KubeModel, SecretKeyRef, cel, list_map
from .names import SPECIALIST_NAME, Identifier, SpecialistName

Backend = Literal["vllm", "tensorrtllm", "python", "onnxruntime"]
Quantization = Literal["none", "fp8", "int8", "awq", "gptq"]

URI_SCHEMES = ("hf", "s3", "gs", "pvc", "oci")
#: No whitespace or control characters: the URI is an argument of the fetcher.
URI_PATTERN = r"^(hf|s3|gs|pvc|oci)://[^\s\x00-\x1f\x7f]+$"
#: pvc://<claim>/<path>: the claim is a PersistentVolumeClaim of the specialist's namespace.
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/.*)?$"
#: A memory quantity (Kubernetes' binary or decimal suffixes, or an exponent).
#: The exponent has at most two digits and the text at most 32 characters
#: (MEMORY_MAX_LENGTH): the operator counts these in bytes, and ``1e400`` used to
#: overflow its pool loop. What still parses past 2^63 bytes refuses that one object.
MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?|[eE][0-9]{1,2})?$"
MEMORY_MAX_LENGTH = 32
#: Image references: no whitespace or control characters.
IMAGE_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"

#: A Triton/vLLM backend parameter name.
ParameterKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: Free text a tenant writes (examples, keywords): bounded, so one specialist's domain
#: stays a small part of the router's configuration.
Example = Annotated[str, Field(min_length=1, max_length=1024)]
Keyword = Annotated[str, Field(min_length=1, max_length=128)]

#: Which quantization each backend can serve; the CRD's CEL rule is built from it.
QUANTIZATION_BY_BACKEND: dict[str, tuple[str, ...]] = {
    "vllm": ("none", "fp8", "int8", "awq", "gptq"),
    "tensorrtllm": ("none", "fp8", "int8", "awq"),
    "onnxruntime": ("none", "int8"),
    "python": ("none",),
}


def _quantization_rule() -> str:
    parts = [
        f"(self.backend == '{b}' && self.quantization in [{', '.join(repr(q) for q in qs)}])"
        for b, qs in QUANTIZATION_BY_BACKEND.items()
    ]
    return "!has(self.quantization) || " + " || ".join(parts)


class ReasoningSpec(KubeModel):
    """How the model marks its chain of thought, so the router can budget and cut it."""

    start_marker: str = Field(default="<think>", min_length=1, max_length=64)
    """Text that opens the reasoning section."""
    end_marker: str = Field(default="</think>", min_length=1, max_length=64)
    """Text that closes the reasoning section."""


class AdapterSpec(KubeModel):
    """A LoRA adapter served by its base specialist's vLLM engine (multi-LoRA)."""

    base: SpecialistName
    """Name of the SLMSpecialist of this namespace whose model the adapter was trained on
    (backend vllm). Its server loads the adapter; requests reach it there with the
    adapter's ``lora_name``. A base by URI only: declare that model as a specialist of
    its own (it may have no domain) and name it here."""
    uri: str = Field(pattern=URI_PATTERN, max_length=2048)
    """Where the adapter's weights live (same schemes as model.uri)."""
    rank: int = Field(default=16, ge=1, le=512)
    """The adapter's LoRA rank (the base's max_lora_rank is the largest of its adapters')."""


class ModelSpec(KubeModel):
    """The artifact and how Triton serves it."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    _quantization_rule(),
                    "quantization is not supported by this backend "
                    "(vllm: none/fp8/int8/awq/gptq; tensorrtllm: none/fp8/int8/awq; "
                    "onnxruntime: none/int8; python: none)",
                    ".quantization",
                ),
                cel(
                    "has(self.uri) != has(self.adapter)",
                    "set model.uri (a whole model) or model.adapter (a LoRA adapter on a "
                    "base specialist), exactly one of them",
                    ".uri",
                ),
                cel(
                    "!has(self.adapter) || self.backend == 'vllm'",
                    "a LoRA adapter is served by its base's vLLM engine (multi-LoRA): "
                    "backend must be vllm",
                    ".backend",
                ),
                cel(
                    "!has(self.uri) || !self.uri.startsWith('pvc://') || "
                    f"self.uri.matches(r'{PVC_URI_PATTERN}')",
                    "a pvc:// URI starts with the name of a PersistentVolumeClaim "
                    "(pvc://<claim>/<path>)",
                    ".uri",
                ),
            ]
        }
    }

    uri: str | None = Field(default=None, pattern=URI_PATTERN, max_length=2048)
    """Where the model lives: hf://org/name[@revision], s3://bucket/path, gs://bucket/path,
    pvc://claim/path or oci://registry/repo:tag. Unset for an adapter."""
    adapter: AdapterSpec | None = None
    """A LoRA adapter on a base specialist instead of a whole model (see docs/pools.md):
    served by the base's server, no Deployment of its own."""
    backend: Backend
    """Triton backend that serves the model."""
    quantization: Quantization = "none"
    """Weight quantization; must be one the backend supports."""
    context_length: int = Field(default=4096, ge=128, le=1048576)
    """Maximum context length in tokens."""
    max_batch_size: int = Field(default=0, ge=0, le=4096)
    """Triton max_batch_size (0: the backend batches on its own, as vLLM does)."""
    parameters: dict[ParameterKey, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=64
    )
    """Backend parameters passed through (e.g. gpu_memory_utilization for vLLM)."""
    credentials: SecretKeyRef | None = None
    """Secret key holding the token used to fetch the artifact (e.g. a Hugging Face token)."""
    reasoning: ReasoningSpec | None = None
    """Set for models that think before answering; enables the trace-budget controller."""

    @model_validator(mode="after")
    def _one_artifact(self) -> ModelSpec:
        """The CEL rules above, for the paths that validate without the API server."""
        if (self.uri is None) == (self.adapter is None):
            raise ValueError("set model.uri (a whole model) or model.adapter, exactly one")
        if self.adapter is not None and self.backend != "vllm":
            raise ValueError("a LoRA adapter is served by its base's vLLM engine: backend vllm")
        return self


class DomainSpec(KubeModel):
    """The specialist's territory, which the router learns to recognise."""

    description: str = Field(default="", max_length=4096)
    """What the specialist handles, in a sentence or two."""
    keywords: list[Keyword] = Field(default_factory=list, max_length=256)
    """Words that strongly suggest this domain."""
    examples: list[Example] = Field(default_factory=list, max_length=2000)
    """Example requests this specialist should receive."""
    examples_from: ConfigMapKeyRef | None = None
    """A ConfigMap key of this namespace holding more examples, one per line; at most
    256 KiB are read (more: the specialist is Ready=False with ExamplesTooLarge)."""
    labels: list[Identifier] = Field(default_factory=list, max_length=256)
    """Output labels the model can answer with (for per-label acceptance thresholds)."""


class GPUToleration(KubeModel):
    key: str = Field(min_length=1, max_length=317)
    """Taint key to tolerate."""
    operator: Literal["Exists", "Equal"] = "Exists"
    """Exists or Equal."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value, with Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; all when unset."""


class ResourcesSpec(KubeModel):
    gpu: int = Field(default=0, ge=0, le=16)
    """Whole GPUs per replica (nvidia.com/gpu)."""
    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$", max_length=MEMORY_MAX_LENGTH)
    """CPU request per replica (Kubernetes quantity)."""
    memory: str = Field(default="2Gi", pattern=MEMORY_QUANTITY, max_length=MEMORY_MAX_LENGTH)
    """Memory request and limit per replica (Kubernetes quantity); for a member of a CPU
    pool, the memory it needs in the pool's server."""
    gpu_memory: str | None = Field(
        default=None, pattern=MEMORY_QUANTITY, max_length=MEMORY_MAX_LENGTH
    )
    """GPU memory the model needs when it shares a GPU pool's GPUs (weights, KV cache and
    overhead; e.g. 6Gi). Required for a member of a pool with GPUs."""


class ReplicasSpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel("self.min <= self.max", "min must be less than or equal to max", ".min")
            ]
        }
    }

    min: int = Field(default=1, ge=0, le=1000)
    """Fewest replicas. A new specialist starts at max(min, 1) (spec.replicas defaults
    to 1): with 0 it starts with one replica, and the built-in autoscaler (or KEDA) scales
    it to zero when idle."""
    max: int = Field(default=1, ge=1, le=1000)
    """Most replicas the autoscaler may run."""


class ServingSpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.pool) || self.resources.gpu == 0",
                    "a pool member shares its pool's GPUs: declare resources.gpuMemory, "
                    "not resources.gpu",
                    ".resources.gpu",
                ),
                cel(
                    "!has(self.pool) || !has(self.autoscaling) || !has(self.autoscaling.mode)"
                    " || self.autoscaling.mode in ['builtin', 'none']",
                    "a pool member has no replicas of its own (its pool's are shared): "
                    "autoscaling.mode hpa or keda would scale nothing; leave it builtin or none",
                    ".autoscaling.mode",
                ),
            ]
        }
    }

    pool: SpecialistName | None = None
    """Name of an SLMPool of this namespace to be served by (see docs/pools.md): the
    specialist gets no Deployment of its own but is a model of the pool's Triton
    server, loaded and unloaded by the operator. Its image, replicas and autoscaling
    are the pool's; its resources.memory (CPU pool) or resources.gpuMemory (GPU pool)
    is what it occupies there."""
    image: str | None = Field(default=None, max_length=512, pattern=IMAGE_PATTERN)
    """tritonserver image; a default matching the backend is used when unset."""
    fetcher_image: str | None = Field(default=None, max_length=512, pattern=IMAGE_PATTERN)
    """Image of the init container that fetches the model; the chart's default when unset."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Resources of each replica."""
    replicas: ReplicasSpec = Field(default_factory=ReplicasSpec)
    """Replica bounds."""
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """Who sets the replica count within the bounds, and how (see docs/autoscaling.md)."""
    node_selector: dict[
        Annotated[str, Field(min_length=1, max_length=317)],
        Annotated[str, Field(max_length=63)],
    ] = Field(default_factory=dict, max_length=32)
    """Node labels the Pods must land on."""
    tolerations: list[GPUToleration] = Field(default_factory=list, max_length=32)
    """Taints the Pods tolerate (GPU nodes are often tainted)."""
    model_cache_size: str = Field(default="20Gi", pattern=r"^[0-9]+([EPTGMK]i?)?$")
    """Size limit of the emptyDir the model is fetched into."""


class CostSpec(KubeModel):
    """What the specialist costs; drives cost-aware routing, spend and scaling."""

    replica_hour_usd: float = Field(default=0.0, ge=0)
    """Price of one replica for one hour, in USD."""
    input_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million input tokens, in USD."""
    output_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million output tokens, in USD."""


class SLOSpec(KubeModel):
    latency_p95_ms: int = Field(default=500, ge=1, le=600000)
    """Target p95 latency per request, in milliseconds."""
    target_in_flight: int = Field(default=8, ge=1, le=10000)
    """Target concurrent requests per replica."""


_IN_POOL = "(has({o}.serving) && has({o}.serving.pool))"
#: Joining or leaving a pool is a re-creation: the specialist's own Deployment (or its
#: place in a pool) is never converted in place, so the operator needs no delete right.
POOL_IMMUTABLE = cel(
    f"{_IN_POOL.format(o='self')} == {_IN_POOL.format(o='oldSelf')} && "
    f"(!{_IN_POOL.format(o='self')} || self.serving.pool == oldSelf.serving.pool)",
    "serving.pool is immutable: delete and re-create the specialist to move it into, "
    "out of or between pools",
    ".serving.pool",
)


class SLMSpecialistSpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [*AUTOSCALING_RULES, POOL_IMMUTABLE]}
    }

    model: ModelSpec
    """The model artifact and its Triton backend."""
    domain: DomainSpec = Field(default_factory=DomainSpec)
    """The requests this specialist is for."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """How the model is deployed."""
    cost: CostSpec = Field(default_factory=CostSpec)
    """What the model costs."""
    slo: SLOSpec = Field(default_factory=SLOSpec)
    """Latency and concurrency targets."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Desired replica count: the scale subresource's field, written by whoever
    serving.autoscaling.mode names (the built-in autoscaler, an HPA, KEDA, kubectl scale).
    Leave it out of manifests; the Deployment follows it, kept within serving.replicas
    (so the default of 1 starts a specialist at its min when min is higher). Always set:
    the scale subresource cannot be read without it."""


class ObservedSpec(KubeModel):
    latency_p95_ms: float | None = None
    """Observed p95 latency in milliseconds."""
    throughput_rps: float | None = None
    """Observed requests per second."""
    cost_usd_per_hour: float | None = None
    """Current spend rate in USD per hour."""
    in_flight: float | None = None
    """Average concurrent requests over all replicas, seen at the router."""
    in_flight_per_replica: float | None = None
    """in_flight divided by the current replicas (compare slo.targetInFlight)."""
    queue_ms: float | None = None
    """Mean time a request waited in Triton's queue, in milliseconds."""
    escalation_rps: float | None = None
    """Requests per second escalated to this specialist by the cascade tiers in front."""
    window_seconds: float | None = None
    """Span of metrics the values above were computed over."""
    time: str | None = None
    """When the values were observed (RFC 3339)."""


class SLMSpecialistStatus(KubeModel):
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    """Ready, Reconciling and Stalled (the operator); Scaling (the built-in autoscaler)."""
    replicas: int | None = None
    """Replicas that exist."""
    ready_replicas: int | None = None
    """Replicas that are ready."""
    endpoint: str | None = None
    """gRPC endpoint of the Triton server (host:port)."""
    triton_model: str | None = None
    """Name of the model inside Triton."""
    observed: ObservedSpec | None = None
    """Observed latency, throughput and cost."""
    desired_replicas: int | None = None
    """Replicas the built-in autoscaler last decided (the Scaling condition says why)."""
    last_scale_time: str | None = None
    """When the built-in autoscaler last changed the replica count (RFC 3339)."""
    selector: str | None = None
    """Label selector of the specialist's Pods (the scale subresource reports it to HPA
    and KEDA)."""


NAME_RULE = cel(
    f"self.metadata.name.matches('{SPECIALIST_NAME}')",
    "metadata.name must be a DNS label of at most 52 characters starting with a letter "
    "(children are named slm-<name>-...)",
)


class SLMSpecialist(KubeModel):
    """One small language model served by Triton."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [NAME_RULE]}
    }

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["SLMSpecialist"] = "SLMSpecialist"
    spec: SLMSpecialistSpec
    status: SLMSpecialistStatus | None = None
