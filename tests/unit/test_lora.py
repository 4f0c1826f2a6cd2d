"""LoRA adapters: the vLLM backend's documented multi-LoRA config, the base's Pods, the
adapter codec, base checks and the adapter's status. Pure."""

from __future__ import annotations

import json

import orjson
import pytest

from slmfleet.api.specialist import ModelSpec, SLMSpecialistSpec
from slmfleet.render.lora import (
    LORA_ENGINE_KEYS,
    MULTI_LORA_FILE,
    Adapter,
    adapter_status,
    adapters_of,
    base_problem,
)
from slmfleet.render.specialist import Owner, build_children
from slmfleet.render.translate import specialist_config
from slmfleet.router.backends import Codecs
from slmfleet.router.triton.codecs import AdapterCodec, TextCodec

#: The engine arguments Triton's vLLM backend documents for multi-LoRA
#: (docs/llama_multi_lora_tutorial.md, "Populate model.json") plus vLLM's max_loras.
DOCUMENTED_LORA_KEYS = {"enable_lora", "max_lora_rank", "max_loras"}


def spec(**model) -> SLMSpecialistSpec:
    return SLMSpecialistSpec.model_validate({"model": model})


def adapter(base: str = "base", uri: str = "hf://org/a", rank: int = 16) -> SLMSpecialistSpec:
    return spec(backend="vllm", adapter={"base": base, "uri": uri, "rank": rank})


BASE = spec(uri="hf://org/base", backend="vllm")
FLEET = {
    "base": BASE,
    "fr": adapter(rank=8),
    "de": adapter(uri="pvc://loras/de", rank=32),
    "other": adapter(base="elsewhere"),
}


def test_model_is_a_uri_or_an_adapter_never_both_or_neither() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec.model_validate({"backend": "vllm"})
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec.model_validate(
            {"backend": "vllm", "uri": "hf://a/b", "adapter": {"base": "x", "uri": "hf://a/c"}}
        )
    with pytest.raises(ValueError, match="backend vllm"):
        ModelSpec.model_validate({"backend": "python", "adapter": {"base": "x", "uri": "hf://a"}})


def test_the_base_renders_the_documented_multi_lora_config() -> None:
    adapters = adapters_of("base", FLEET)
    assert [a.name for a in adapters] == ["de", "fr"]
    children = build_children(Owner("base", "ns", "uid"), BASE, adapters=adapters)
    configmap, deployment = children[0], children[2]
    engine = json.loads(configmap["data"]["model.json"])
    lora = {k: v for k, v in engine.items() if "lora" in k}
    assert set(lora) <= DOCUMENTED_LORA_KEYS and set(LORA_ENGINE_KEYS) == DOCUMENTED_LORA_KEYS
    # The backend's own test: str(engine["enable_lora"]).lower() == "true" (src/model.py).
    assert str(engine["enable_lora"]).lower() == "true"
    assert engine["max_lora_rank"] == 32 and engine["max_loras"] == 2
    # multi_lora.json: a flat {lora name: local directory}, in the version directory,
    # where the fetchers put each adapter's weights.
    paths = json.loads(configmap["data"][MULTI_LORA_FILE])
    assert paths == {"de": "/models/base/1/loras/de", "fr": "/models/base/1/loras/fr"}
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/models/base/1/multi_lora.json" in mounts and "/models/base/1/model.json" in mounts
    fetchers = {c["name"]: c for c in pod["initContainers"]}
    assert fetchers["fetch-lora-fr"]["args"] == ["--uri", "hf://org/a", "--dest", "/store/loras/fr"]
    de = fetchers["fetch-lora-de"]
    assert de["args"][-2:] == ["--source-root", "/lora-source/de"]
    assert {"name": "lora-src-de", "persistentVolumeClaim": {"claimName": "loras",
            "readOnly": True}} in pod["volumes"]  # fmt: skip


def test_a_base_without_adapters_renders_as_before() -> None:
    children = build_children(Owner("base", "ns", "uid"), BASE)
    assert MULTI_LORA_FILE not in children[0]["data"]
    assert "enable_lora" not in json.loads(children[0]["data"]["model.json"])
    names = [c["name"] for c in children[2]["spec"]["template"]["spec"]["initContainers"]]
    assert names == ["fetch-model"]


def test_adapter_reaches_the_router_as_the_base_model_with_its_lora_name() -> None:
    cfg = specialist_config("ns", "fr", FLEET["fr"], ready=True, extra_examples=[])
    assert (cfg.endpoint, cfg.triton_model, cfg.lora_name) == ("slm-base.ns.svc:8001", "base", "fr")
    plain = specialist_config("ns", "base", BASE, ready=True, extra_examples=[])
    assert plain.lora_name is None


async def test_the_adapter_codec_sends_lora_name_in_sampling_parameters() -> None:
    cfg = specialist_config("ns", "fr", FLEET["fr"], ready=True, extra_examples=[])
    codec = await Codecs().for_specialist(cfg)
    assert isinstance(codec, AdapterCodec)
    req = codec.request("base", "hi", {"max_tokens": 5}, "r1")
    names = [t.name for t in req.inputs]
    raw = req.raw_input_contents[names.index("sampling_parameters")]
    assert orjson.loads(raw[4:]) == {"max_tokens": 5, "lora_name": "fr"}  # 4-byte length
    base = await Codecs().for_specialist(specialist_config("ns", "base", BASE, ready=True,
                                                           extra_examples=[]))  # fmt: skip
    assert isinstance(base, TextCodec)


@pytest.mark.parametrize(
    ("name", "fleet", "expected"),
    [
        ("fr", FLEET, None),
        ("other", FLEET, "spec.model.adapter.base: no SLMSpecialist named 'elsewhere'"),
        ("self", {"self": adapter(base="self")}, "cannot be its own base"),
        ("x", {"x": adapter(base="fr"), "fr": FLEET["fr"]}, "'fr' is itself an adapter"),
        ("x", {"x": adapter(), "base": spec(uri="hf://a/b", backend="python")},
         "'base' is served by backend python; LoRA adapters need a vllm base"),
        ("x", {"x": adapter(), "base": SLMSpecialistSpec.model_validate(
            {"model": {"uri": "hf://a/b", "backend": "vllm"}, "serving": {"pool": "p"}})},
         "'base' is a pool member"),
    ],
)  # fmt: skip
def test_base_problems_name_the_field(name, fleet, expected) -> None:
    problem = base_problem(name, fleet[name].model.adapter, fleet)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem
        assert problem.startswith("spec.model.adapter.base: ")


def dep(available: int) -> dict:
    return {"metadata": {"name": "slm-base", "generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": available, "readyReplicas": available}}  # fmt: skip


def ready_of(status: dict) -> tuple[str, str]:
    c = next(c for c in status["conditions"] if c["type"] == "Ready")
    return c["status"], c["reason"]


def test_adapter_status_follows_its_base_once_listed() -> None:
    listed = {MULTI_LORA_FILE: json.dumps({"fr": "/models/base/1/loras/fr"})}
    common = dict(name="fr", namespace="ns", base="base", generation=1, problem=None)
    pending = adapter_status(**common, base_deployment=dep(1), base_files={})
    assert ready_of(pending) == ("False", "AdapterPending")
    up = adapter_status(**common, base_deployment=dep(1), base_files=listed)
    assert ready_of(up) == ("True", "Available")
    assert (up["endpoint"], up["tritonModel"]) == ("slm-base.ns.svc:8001", "base")
    down = adapter_status(**common, base_deployment=dep(0), base_files=listed)
    assert ready_of(down)[0] == "False"
    bad = adapter_status(**(common | {"problem": "spec.model.adapter.base: no"}),
                         base_deployment=None, base_files=None)  # fmt: skip
    assert ready_of(bad) == ("False", "AdapterBaseInvalid")
    assert next(c for c in bad["conditions"] if c["type"] == "Stalled")["status"] == "True"


def test_adapters_of_ignores_other_bases() -> None:
    assert adapters_of("elsewhere", FLEET) == [Adapter("other", FLEET["other"].model.adapter)]
