"""The local fleet behind ``slmfleet up PATH``: the same manifests a cluster gets, served
on this machine by the real Triton server (CPU stand-ins) and the real router.

Pure part (table-tested): read a folder of manifests, validate them with the API models,
map every SLMSpecialist to a CPU stand-in and render the router configuration as if the
operator had seen every specialist Ready on the local Triton. Imperative part:
``LocalFleet`` writes the model repository, starts ``tritonserver`` and the router
(``python -m slmfleet.router`` as a child process) and stops both.

What each specialist runs as locally: ``local.render``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..api.routerconfig import RouterConfig
from ..autoscale.decide import ScalePolicy
from .manifests import (
    Document,
    FleetManifests,
    ManifestError,
    default_namespace,
    load_fleet,
    manifest_files,
    parse_fleet,
    read_documents,
    write_secrets,
)
from .redis import RedisServer
from .render import local_router_config
from .residency import (
    Change,
    Member,
    Residency,
    local_policy,
    with_scaled_to_zero,
    write_config,
)
from .router import RouterProcess, log_tail
from .standins import StandInChoice, export_stand_ins, stand_in_for, stand_ins
from .telemetry import LocalTelemetry
from .triton import TritonServer, free_port

__all__ = [
    "Document",
    "FleetManifests",
    "LocalFleet",
    "ManifestError",
    "StandInChoice",
    "default_namespace",
    "export_stand_ins",
    "free_port",
    "load_fleet",
    "local_router_config",
    "manifest_files",
    "parse_fleet",
    "pids",
    "port_is_free",
    "read_documents",
    "stand_in_for",
    "stand_ins",
]

_LOADED = re.compile(r"successfully loaded '([^']+)'")


# -- the running fleet -------------------------------------------------------------------------

Progress = Callable[[str], None]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalFleet:
    """Triton + router for one manifest folder. ``start()`` blocks until both are ready."""

    def __init__(
        self,
        path: Path | str,
        *,
        port: int = 8080,
        host: str = "127.0.0.1",
        namespace: str | None = None,
        workdir: Path | None = None,
        progress: Progress | None = None,
        startup_timeout: float = 300.0,
        replicas: int = 1,
        ledger_dir: Path | None = None,
        ledger_url: str | None = None,
        telemetry: LocalTelemetry | None = None,
        scale_to_zero: bool = True,
    ) -> None:
        self.path = Path(path)
        self.telemetry = telemetry
        """The decision store and reviewers the router is given (None: none)."""
        self.ledger_dir = ledger_dir
        """Where a local redis-server keeps the shared spend ledger (``slmfleet up
        --redis``); None: the router's own in-process ledger."""
        self.ledger_url = ledger_url
        """A Redis already running for the ledger (instead of ``ledger_dir``)."""
        self.redis: RedisServer | None = None
        self.replicas = max(1, replicas)
        """Triton servers to run, each serving every model; the router balances over them."""
        self.port = port
        self.host = host
        self.fleet = load_fleet(self.path, namespace)
        self.choices = stand_ins(self.fleet)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="slmfleet-up-"))
        self.progress = progress or (lambda _msg: None)
        self.startup_timeout = startup_timeout
        self.triton: TritonServer | None = None
        self.more_tritons: list[TritonServer] = []
        self.router: RouterProcess | None = None
        self.config: RouterConfig | None = None
        self.on_request: Callable[[dict[str, Any]], None] | None = None
        self._tail: threading.Thread | None = None
        self.scale_to_zero = scale_to_zero
        """Unload idle specialists whose min is 0 and load them on demand (residency.py)."""
        self.residency: Residency | None = None
        self.on_residency: Callable[[Change], None] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def router_log(self) -> Path:
        return self.workdir / "router.log"

    def model_names(self) -> list[str]:
        assert self.config is not None
        return [p.model_name for p in self.config.policies]

    # -- start ------------------------------------------------------------------------------
    def start(self) -> LocalFleet:
        try:
            self._start_triton()
            self._start_ledger()
            self._start_router()
            self._start_residency()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_triton(self) -> None:
        from .models import write_model_repository

        if not port_is_free(self.port, self.host):
            raise RuntimeError(f"port {self.port} is already in use; pass --port to pick another")
        repo = write_model_repository(
            self.workdir / "models", {c.model: c.stand_in for c in self.choices}
        )
        server = TritonServer(
            repo,
            log_path=self.workdir / "tritonserver.log",
            startup_timeout=self.startup_timeout,
            stop_timeout=8.0,  # Ctrl-C must be quick; the stand-ins hold no state
        )
        self.triton = server
        self.progress(f"Triton starting ({len(self.choices)} models, log {server.log_path})")
        # start() runs on this (the main) thread: tritonserver is started with
        # PR_SET_PDEATHSIG, which fires when the *thread* that forked it ends.
        announced: set[str] = set()
        done = threading.Event()
        begin = time.monotonic()

        def watch() -> None:
            # Triton serves HTTP only once every model is loaded: follow its log instead.
            offset = 0
            while not done.wait(0.3):
                try:
                    with server.log_path.open("rb") as log:
                        log.seek(offset)
                        chunk = log.read()
                except OSError:
                    continue
                end = chunk.rfind(b"\n") + 1
                offset += end
                for name in _LOADED.findall(chunk[:end].decode(errors="replace")):
                    if name not in announced:
                        announced.add(name)
                        self.progress(
                            f"  model {name} loaded ({len(announced)}/{len(self.choices)}, "
                            f"{time.monotonic() - begin:.1f}s)"
                        )

        watcher = threading.Thread(target=watch, name="triton-progress", daemon=True)
        watcher.start()
        try:
            server.start()
        finally:
            done.set()
            watcher.join()
        for name in sorted({c.model for c in self.choices} - announced):
            self.progress(f"  model {name} loaded")
        self.progress(
            f"Triton ready: {len(self.choices)} models on gRPC {server.grpc_url} "
            f"({time.monotonic() - begin:.1f}s)"
        )
        for i in range(1, self.replicas):
            more = TritonServer(
                repo,
                log_path=self.workdir / f"tritonserver-{i}.log",
                startup_timeout=self.startup_timeout,
                stop_timeout=8.0,
            )
            self.more_tritons.append(more)
            more.start()
            self.progress(f"Triton replica {i + 1}/{self.replicas} ready on {more.grpc_url}")

    def _start_ledger(self) -> None:
        if self.ledger_dir is None:
            return
        self.redis = RedisServer(self.ledger_dir)
        self.redis.start()  # on this thread, as Triton (PR_SET_PDEATHSIG)
        self.progress(f"Spend ledger: redis-server on {self.redis.url}, data in {self.ledger_dir}")

    def _start_router(self) -> None:
        assert self.triton is not None
        endpoints = [self.triton.grpc_url, *(t.grpc_url for t in self.more_tritons)]
        self.config = local_router_config(self.fleet, self.triton.grpc_url, endpoints)
        config_path = self.workdir / "router.json"
        config_path.write_text(self.config.model_dump_json(by_alias=True, exclude_none=True))
        self.progress(
            f"Router starting on {self.host}:{self.port} "
            f"(fitting the routing classifier on the specialists' domain examples)"
        )
        begin = time.monotonic()
        secrets = write_secrets(self.fleet, self.workdir / "secrets")
        url = self.redis.url if self.redis is not None else self.ledger_url
        ledger = ["--ledger-url", url] if url else []
        args = ["--config", str(config_path), "--log-level", "info", "--secrets", f"dir:{secrets}"]
        env = None
        if self.telemetry is not None:
            env = {**os.environ, **self.telemetry.env()}
        self.router = RouterProcess(
            [*args, *ledger],
            port=self.port,
            host=self.host,
            log_path=self.router_log,
            startup_timeout=self.startup_timeout,
            env=env,
        )
        self.router.start()
        self.progress(f"Router ready: classifier fitted ({time.monotonic() - begin:.1f}s)")
        self._tail = threading.Thread(target=self._follow_router_log, daemon=True)
        self._tail.start()

    def _write_config(self, scaled_to_zero: set[str]) -> None:
        assert self.config is not None
        write_config(self.workdir / "router.json", with_scaled_to_zero(self.config, scaled_to_zero))

    def _start_residency(self) -> None:
        """Specialists with min 0 (builtin mode) are unloaded when idle, loaded on demand."""
        assert self.triton is not None and self.router is not None
        assert self.config is not None
        model_of = {s.id: s.triton_model for s in self.config.specialists}
        members = [
            Member(
                s.id,
                model_of[s.id],
                local_policy(ScalePolicy.from_spec(s.spec)),
                float(s.spec.serving.autoscaling.window_seconds),
            )
            for s in self.fleet.specialists
            if s.spec.serving.replicas.min == 0 and s.spec.serving.autoscaling.mode == "builtin"
        ]
        if not self.scale_to_zero or not members:
            return
        for m in members:
            after = m.policy.scale_to_zero_after_s
            self.progress(f"  {m.sid}: min 0, unloaded after {after:.0f}s without requests")
        self.residency = Residency(
            members,
            router_metrics=f"{self.router.url}/metrics",
            triton_http=[t.http_url for t in (self.triton, *self.more_tritons)],
            publish=self._write_config,
            on_change=lambda c: self.on_residency and self.on_residency(c),
        ).start()

    def _follow_router_log(self) -> None:
        """Hand each request's decision line (JSON) to ``on_request``."""
        with self.router_log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            while self.router is not None and self.router.alive():
                line = f.readline()
                if not line:
                    time.sleep(0.2)
                    continue
                if self.on_request and line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        # Decision lines only (review cases, shadow comparisons: events).
                        if "request_id" in record and "event" not in record:
                            self.on_request(record)

    # -- run / stop -----------------------------------------------------------------------------
    def failure(self) -> str | None:
        """Why the fleet is down, or None while both processes run."""
        for t in [self.triton, *self.more_tritons]:
            if t is not None and not t.is_alive():
                return f"tritonserver exited; log {t.log_path}:\n{t.log_tail()}"
        if self.router is not None and not self.router.alive():
            return f"the router exited; log {self.router_log}:\n{log_tail(self.router_log)}"
        if self.redis is not None and self.redis.pid is not None and not self.redis.alive():
            return f"redis-server exited:\n{self.redis.log_tail()}"
        return None

    def stop(self) -> None:
        residency, self.residency = self.residency, None
        if residency is not None:
            residency.stop()
        router, self.router = self.router, None
        if router is not None and router.alive():
            begin = time.monotonic()
            router.stop()
            self.progress(f"  router stopped ({time.monotonic() - begin:.1f}s)")
        redis, self.redis = self.redis, None
        if redis is not None:
            redis.stop()  # SIGTERM: the AOF is flushed, the spend kept in ledger_dir
        more, self.more_tritons = self.more_tritons, []
        for t in more:
            t.stop()
        server, self.triton = self.triton, None
        if server is not None:
            begin = time.monotonic()
            alive = server.is_alive()
            server.stop()
            if alive:
                self.progress(f"  Triton stopped ({time.monotonic() - begin:.1f}s)")
        if self._own_workdir and not os.environ.get("SLMFLEET_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pids(fleet: LocalFleet) -> Iterator[int]:
    """Process ids of the fleet's children (for tests and diagnostics)."""
    if fleet.triton is not None and fleet.triton.pid:
        yield fleet.triton.pid
    if fleet.router is not None and fleet.router.pid:
        yield fleet.router.pid
    if fleet.redis is not None and fleet.redis.pid:
        yield fleet.redis.pid


__all__ += ["free_port", "pids", "port_is_free"]
