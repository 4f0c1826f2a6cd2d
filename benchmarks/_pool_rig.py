"""A pool on this machine for the pool benchmarks: the real tritonserver on an empty
repository (explicit model control), members laid out by the repository sidecar's code
(``pool.sync``) from a claim directory, the operator's residency code (``PoolLoop``:
``lru.plan`` + Triton's repository API) and the real router holding requests for cold
members. The same parts as tests/integration/test_pool_residency.py."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from slmfleet.api.pool import SLMPoolSpec
from slmfleet.api.routerconfig import RouterConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.local import StandIn, TritonServer
from slmfleet.local.models import _FILES, _SOURCES
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port
from slmfleet.pool.fit import Claim, fit, parse_bytes
from slmfleet.pool.local import PoolLoop
from slmfleet.pool.residency import Change, PoolResidency
from slmfleet.pool.sync import sync_once
from slmfleet.render.pool import PoolMember, member_digest, repository_data

#: The router polls its configuration every 0.2 s here: a second covers it.
DRAIN_S = 1.0


def member(name: str, memory: str = "1Gi") -> PoolMember:
    stand_in = StandIn.domain({name: [f"question for {name}"]}, {name: f"{name} answers"})
    spec = SLMSpecialistSpec.model_validate(
        {"model": stand_in.model_spec().wire(),
         "serving": {"pool": "p", "resources": {"memory": memory}}}
    )  # fmt: skip
    return PoolMember(name, spec)


@dataclass
class Rig:
    root: Path
    pool: SLMPoolSpec
    names: list[str]
    changes: list[Change] = field(default_factory=list)
    triton: TritonServer | None = None
    router: RouterProcess | None = None
    loop: PoolLoop | None = None

    @property
    def store(self) -> Path:
        return self.root / "store"

    def start(self) -> Rig:
        claim = self.root / "source" / "slmfleet-standins" / "domain"
        claim.mkdir(parents=True)
        for f in _FILES:
            shutil.copyfile(_SOURCES / f, claim / f)
        (self.store / "models").mkdir(parents=True)
        self.triton = TritonServer(self.store / "models", log_path=self.root / "triton.log",
                                   startup_timeout=180).start()  # fmt: skip
        self.publish(dict.fromkeys(self.names, "Pending"))
        self.router = RouterProcess(["--config", str(self.root / "router.json"),
                                     "--poll-interval", "0.2"], port=free_port(),
                                    log_path=self.root / "router.log")  # fmt: skip
        self.router.start()
        self.loop = PoolLoop(
            PoolResidency("p", parse_bytes(self.pool.resources.memory), drain_s=DRAIN_S),
            servers=[self.triton.http_url],
            router_metrics=self.router.url + "/metrics",
            sids={n: f"local/{n}" for n in self.names},
            publish=self.publish,
            on_change=self.changes.append,
            interval_s=0.3,
        )
        return self

    def publish(self, states: dict[str, str]) -> None:
        """The router configuration for these member states (a member not yet placed is
        Pending: its requests wait, as in a cluster)."""
        assert self.triton is not None
        states = dict.fromkeys(self.names, "Pending") | states
        cfg = RouterConfig.model_validate(
            {
                "version": 1,
                "specialists": [
                    {"id": f"local/{n}", "endpoint": self.triton.grpc_url, "tritonModel": n,
                     "backend": "python", "ready": states.get(n) == "Loaded",
                     "scaledToZero": states.get(n) in ("Unloaded", "Loading", "Pending",
                                                       "Draining")}
                    for n in self.names
                ],
                "policies": [
                    {"modelName": n, "id": f"local/{n}", "specialists": [f"local/{n}"],
                     "routing": {"semantic": {"enabled": False}},
                     "cascade": [{"name": "small", "routed": True}],
                     "capacity": {"whenScaledToZero": "wait", "maxWaitSeconds": 120}}
                    for n in self.names
                ],
            }
        )  # fmt: skip
        path = self.root / "router.json"
        path.with_suffix(".tmp").write_text(cfg.model_dump_json(by_alias=True, exclude_none=True))
        path.with_suffix(".tmp").replace(path)

    def place(self, members: list[PoolMember]) -> list[str]:
        """The operator's part: the ConfigMap (as kubelet mounts it), the sidecar's sync,
        the fit, the residency's members. Returns the members laid out."""
        config = self.root / "configmap"
        shutil.rmtree(config, ignore_errors=True)
        config.mkdir()
        for key, text in repository_data(self.pool, members).items():
            (config / key).write_text(text)
        changed = sync_once(config, self.store, source_root=self.root / "source")
        capacity = parse_bytes(self.pool.resources.memory)
        claims = [Claim(m.name, parse_bytes(m.spec.serving.resources.memory)) for m in members]
        placed = fit("p", capacity, claims, overcommit=self.pool.residency.overcommit).placed
        assert self.loop is not None
        self.loop.residency.set_members(
            (m.name, parse_bytes(m.spec.serving.resources.memory), member_digest(m, self.pool))
            for m in members
            if m.name in placed
        )
        return changed

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self.router is not None:
            self.router.stop()
        if self.triton is not None:
            self.triton.stop()
