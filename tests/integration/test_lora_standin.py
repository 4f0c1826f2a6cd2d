"""LoRA adapters served for real on CPU: the real tritonserver runs a base model (the
Python-backend stand-in) with the ``multi_lora.json`` the operator renders, each
adapter's weights directory in place; the real router sends each adapter specialist's
``lora_name`` in ``sampling_parameters`` (the adapter codec); the official openai client
sees a different answer per adapter, and an adapter the base does not list is refused
with the vLLM backend's own message."""

from __future__ import annotations

import shutil
from pathlib import Path

import openai
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.local import StandIn, TritonServer
from slmfleet.local.models import write_model_repository
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port
from slmfleet.render.lora import MULTI_LORA_FILE, adapters_of, multi_lora_json
from slmfleet.render.translate import specialist_config

pytestmark = pytest.mark.integration

REPLIES = {"support-fr": "bonjour, ici l'adaptateur", "support-de": "hallo, hier der Adapter"}


def adapter_spec(name: str) -> SLMSpecialistSpec:
    return SLMSpecialistSpec.model_validate(
        {"model": {"backend": "vllm", "adapter": {"base": "base", "uri": f"hf://org/{name}"}}}
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("lora")
    repo = write_model_repository(tmp / "models", {"base": StandIn("generalist")})
    specs = {n: adapter_spec(n) for n in REPLIES} | {"ghost": adapter_spec("ghost")}
    listed = [a for a in adapters_of("base", specs) if a.name != "ghost"]
    # What the operator renders into the base's version directory, and what the
    # adapters' fetchers put under 1/loras/<adapter> (here: a reply per adapter).
    (repo / "base" / "1" / MULTI_LORA_FILE).write_text(
        multi_lora_json("base", listed, root=str(repo))
    )
    for name, reply in REPLIES.items():
        weights = repo / "base" / "1" / "loras" / name
        weights.mkdir(parents=True)
        (weights / "reply.txt").write_text(reply)
    triton = TritonServer(repo, log_path=tmp / "triton.log", startup_timeout=180).start()
    base_spec = SLMSpecialistSpec.model_validate({"model": {"uri": "hf://org/base",
                                                            "backend": "vllm"}})  # fmt: skip
    specialists = [
        specialist_config("local", n, s, ready=True, extra_examples=[],
                          endpoint_of=lambda _ns, _n: triton.grpc_url)
        for n, s in [("base", base_spec), *specs.items()]
    ]  # fmt: skip
    config = RouterConfig.model_validate(
        {
            "version": 1,
            "specialists": [s.wire() for s in specialists],
            "policies": [
                {"modelName": s.id.split("/")[1], "id": s.id, "specialists": [s.id],
                 "routing": {"semantic": {"enabled": False}},
                 "cascade": [{"name": "small", "routed": True}]}
                for s in specialists
            ],
        }
    )  # fmt: skip
    path = tmp / "router.json"
    path.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    router = RouterProcess(["--config", str(path)], port=free_port(), log_path=tmp / "router.log")
    router.start()
    try:
        yield router, config
    finally:
        router.stop()
        triton.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_adapter_specialists_are_the_base_model_with_their_lora_name(served) -> None:
    _router, config = served
    by_id = {s.id: s for s in config.specialists}
    fr = by_id["local/support-fr"]
    assert (fr.triton_model, fr.lora_name) == ("base", "support-fr")
    assert fr.endpoint == by_id["local/base"].endpoint
    assert by_id["local/base"].lora_name is None


def test_each_adapter_answers_differently_through_the_router(served) -> None:
    router, _config = served
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="-", max_retries=0)

    def ask(model: str) -> str:
        out = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello there"}]
        )
        return out.choices[0].message.content or ""

    answers = {m: ask(m) for m in ("base", "support-fr", "support-de")}
    assert answers["support-fr"] == REPLIES["support-fr"]
    assert answers["support-de"] == REPLIES["support-de"]
    assert answers["base"] not in REPLIES.values() and answers["base"]
    # Streaming carries the adapter too.
    stream = client.chat.completions.create(
        model="support-de", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == REPLIES["support-de"]


def test_an_adapter_the_base_does_not_list_is_refused(served) -> None:
    router, _config = served
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="-", max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code >= 500
    log = Path(router.log_path).read_text()
    assert "LoRA ghost is not supported" in log
