"""Pools on the real Triton server: members laid out by the repository sidecar's code
(``pool.sync``, fetching from a claim directory), loaded and unloaded through Triton's
repository API by the operator's residency code (``pool.residency`` + ``lru.plan``), the
real router holding a request for a cold member while it loads, and the official openai
client. One server for the whole module: nothing here restarts it (its pid is checked).

The pool holds two of its three 1Gi members (capacity 2Gi, overcommit): the least
recently used one is unloaded when a cold one is asked for.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from slmfleet.api.pool import SLMPoolSpec
from slmfleet.api.routerconfig import RouterConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.local import StandIn, TritonServer
from slmfleet.local.models import _FILES, _SOURCES
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port
from slmfleet.pool.fit import Claim, fit, parse_bytes
from slmfleet.pool.local import PoolLoop
from slmfleet.pool.residency import PoolResidency
from slmfleet.pool.sync import sync_once
from slmfleet.render.pool import PoolMember, member_digest, repository_data

pytestmark = pytest.mark.integration

POOL = SLMPoolSpec.model_validate(
    {"resources": {"memory": "2Gi"}, "residency": {"overcommit": True}}
)


def member(name: str, reply: str) -> PoolMember:
    stand_in = StandIn.domain({name: [f"question for {name}"]}, {name: reply})
    spec = SLMSpecialistSpec.model_validate(
        {
            "model": stand_in.model_spec().wire(),
            "serving": {"pool": "p", "resources": {"memory": "1Gi"}},
        }
    )
    return PoolMember(name, spec)


def write_configmap(directory: Path, members: list[PoolMember]) -> None:
    """What kubelet does with the pool's ConfigMap: its keys as files, replaced whole."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for key, text in repository_data(POOL, members).items():
        (directory / key).write_text(text)


def router_config(endpoint: str, names: list[str], states: dict[str, str]) -> RouterConfig:
    return RouterConfig.model_validate(
        {
            "version": 1,
            "specialists": [
                {
                    "id": f"local/{n}",
                    "endpoint": endpoint,
                    "tritonModel": n,
                    "backend": "python",
                    "ready": states.get(n) == "Loaded",
                    "scaledToZero": states.get(n) in ("Unloaded", "Loading", "Pending", "Draining"),
                }
                for n in names
            ],
            "policies": [
                {
                    "modelName": n,
                    "id": f"local/{n}",
                    "specialists": [f"local/{n}"],
                    "routing": {"semantic": {"enabled": False}},
                    "cascade": [{"name": "small", "routed": True}],
                    "capacity": {"whenScaledToZero": "wait", "maxWaitSeconds": 60},
                }
                for n in names
            ],
        }
    )


def index(triton: TritonServer) -> dict[str, str]:
    req = urllib.request.Request(f"{triton.http_url}/v2/repository/index", data=b"{}")
    rows = json.loads(urllib.request.urlopen(req, timeout=5).read())
    return {r["name"]: r.get("state", "") for r in rows}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pool")
    claim = tmp / "source" / "slmfleet-standins" / "domain"
    claim.mkdir(parents=True)
    for f in _FILES:
        shutil.copyfile(_SOURCES / f, claim / f)
    store, config = tmp / "store", tmp / "configmap"
    (store / "models").mkdir(parents=True)
    members = [member("alpha", "alpha answers"), member("beta", "beta answers"),
               member("gamma", "gamma answers")]  # fmt: skip
    write_configmap(config, members)
    triton = TritonServer(store / "models", log_path=tmp / "triton.log", startup_timeout=180)
    triton.start()
    residency = PoolResidency("p", parse_bytes(POOL.resources.memory), drain_s=1.0)
    names = [m.name for m in members]
    path = tmp / "router.json"

    def publish(states: dict[str, str]) -> None:
        cfg = router_config(triton.grpc_url, names, states)
        path.with_suffix(".tmp").write_text(cfg.model_dump_json(by_alias=True, exclude_none=True))
        path.with_suffix(".tmp").replace(path)

    publish(dict.fromkeys(names, "Pending"))  # requests wait until the loop reports
    router = RouterProcess(["--config", str(path), "--poll-interval", "0.2"], port=free_port(),
                           log_path=tmp / "router.log")  # fmt: skip
    router.start()
    changes: list = []
    loop = PoolLoop(
        residency,
        servers=[triton.http_url],
        router_metrics=router.url + "/metrics",
        sids={n: f"local/{n}" for n in names},
        publish=publish,
        on_change=changes.append,
        interval_s=0.3,
    )
    ctx = {"tmp": tmp, "store": store, "config": config, "source": tmp / "source",
           "triton": triton, "router": router, "loop": loop, "changes": changes,
           "members": members, "path": path}  # fmt: skip
    try:
        yield ctx
    finally:
        loop.stop()
        router.stop()
        triton.stop()


def place(ctx, members: list[PoolMember]) -> None:
    """The operator's part on a membership change: the ConfigMap, the fit, the members."""
    write_configmap(ctx["config"], members)
    sync_once(ctx["config"], ctx["store"], source_root=ctx["source"])
    f = fit("p", parse_bytes(POOL.resources.memory),
            [Claim(m.name, parse_bytes(m.spec.serving.resources.memory)) for m in members],
            overcommit=True)  # fmt: skip
    assert f.status == "True", f.message
    ctx["loop"].residency.set_members(
        (m.name, parse_bytes(m.spec.serving.resources.memory), member_digest(m, POOL))
        for m in members
        if m.name in f.placed
    )


def ask(ctx, model: str) -> tuple[str, float]:
    client = openai.OpenAI(base_url=ctx["router"].url + "/v1", api_key="-", max_retries=0)
    t0 = time.monotonic()
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"question for {model}"}], timeout=90
    )
    return out.choices[0].message.content or "", time.monotonic() - t0


def test_members_load_on_demand_lru_out_without_restarting_the_server(pool) -> None:
    triton, loop = pool["triton"], pool["loop"]
    pid = triton.pid
    place(pool, pool["members"])
    loop.start()
    # Free room is filled in joining order: alpha and beta load, gamma waits for a request.
    wait_for(lambda: loop.states() == {"alpha": "Loaded", "beta": "Loaded", "gamma": "Unloaded"},
             60, "alpha and beta loaded")  # fmt: skip
    assert index(triton) == {"alpha": "READY", "beta": "READY", "gamma": ""}
    assert ask(pool, "alpha")[0].endswith("alpha answers")
    time.sleep(0.5)
    assert ask(pool, "beta")[0].endswith("beta answers")  # beta is now more recently used

    # gamma is cold: the router holds the request, the residency loop sees it waiting,
    # unloads the least recently used member (alpha) and loads gamma; the request is served.
    text, cold = ask(pool, "gamma")
    assert text.endswith("gamma answers")
    assert cold < 60
    wait_for(lambda: loop.states()["alpha"] == "Unloaded", 10, "alpha unloaded")
    assert loop.states()["gamma"] == "Loaded"
    assert wait_for(lambda: index(triton)["alpha"] in ("UNAVAILABLE", "UNLOADING", ""), 10, "")
    loads = [c for c in pool["changes"] if c.member == "gamma" and c.action == "load"]
    assert loads and not loads[-1].error and loads[-1].seconds > 0
    assert loop.residency.members["gamma"].last_load_seconds == round(loads[-1].seconds, 3)
    # And back: alpha is cold now, beta (used before gamma) goes.
    assert ask(pool, "alpha")[0].endswith("alpha answers")
    wait_for(lambda: loop.states()["beta"] == "Unloaded", 10, "beta unloaded")
    assert triton.pid == pid and triton.is_alive()


def test_a_changed_member_is_reloaded_and_a_removed_one_unloaded_in_place(pool) -> None:
    triton, loop = pool["triton"], pool["loop"]
    pid = triton.pid
    alpha, beta, _gamma = pool["members"]
    if not loop._thread:
        pytest.fail("runs after test_members_load_on_demand... in this module")
    # gamma's reply changes: a new digest, the sidecar lays it out again, and the loop
    # reloads it in place (Triton reloads a loaded model whose files changed).
    changed = member("gamma", "gamma answers, version 2")
    place(pool, [alpha, beta, changed])
    assert loop.states()["gamma"] in ("Loaded", "Unloaded")
    seen = []

    def new_gamma() -> bool:
        try:
            text = ask(pool, "gamma")[0]
        except openai.APIError as exc:
            seen.append(repr(exc))
            return False
        seen.append(text)
        return text.endswith("version 2")

    wait_for(new_gamma, 60, "the new gamma")
    # Triton swaps the new version in once loaded: no request failed on the way.
    assert all(s.startswith("gamma: gamma answers") for s in seen), seen
    assert any(c.member == "gamma" and c.action in ("reload", "load") for c in pool["changes"])
    # beta leaves the pool: unloaded, its directory removed, nobody restarted.
    place(pool, [alpha, changed])
    wait_for(lambda: "beta" not in index(triton), 30, "beta gone from the repository")
    assert set(loop.states()) == {"alpha", "gamma"}
    wait_for(lambda: loop.states() == {"alpha": "Loaded", "gamma": "Loaded"}, 30,
             "both remaining members loaded (they fit now)")  # fmt: skip
    assert triton.pid == pid and triton.is_alive()
