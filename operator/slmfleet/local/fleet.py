"""The local fleet behind ``slmfleet up PATH``: the same manifests a cluster gets, served
on this machine by the real Triton server (CPU stand-ins) and the real router.

Pure part (table-tested): read a folder of manifests, validate them with the API models,
map every SLMSpecialist to a CPU stand-in and render the router configuration as if the
operator had seen every specialist Ready on the local Triton. Imperative part:
``LocalFleet`` writes the model repository, starts ``tritonserver`` and the router
(``python -m slmfleet.router`` as a child process) and stops both.

Mapping of SLMSpecialists to stand-ins:

* ``python`` backend with ``model.parameters.standin`` set (domain, reasoner, extractor,
  generalist, failing): exactly that stand-in with those parameters: the model the
  cluster serves from the same manifest;
* any other specialist (vLLM, TensorRT-LLM, ONNX, or a python model of your own): a
  ``reasoner`` when ``model.reasoning`` is set, else a ``domain`` stand-in that
  recognises the specialist's domain examples (keywords and description when there are
  none) and answers with the specialist's name as its label.

Locally every stand-in is a python-backend model, so the router config says ``python``
for every specialist whatever the manifest's backend.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..api.budget import Budget
from ..api.names import CONFIG_KEY, DNS_SUBDOMAIN
from ..api.policy import RouterPolicy
from ..api.routerconfig import RouterConfig
from ..api.specialist import SLMSpecialist
from ..render.fleet import Item, render_fleet
from .models import StandIn
from .models.standin import KINDS
from .router import RouterProcess, log_tail
from .triton import TritonServer, free_port

__all__ = [
    "FleetManifests",
    "LocalFleet",
    "ManifestError",
    "StandInChoice",
    "default_namespace",
    "load_fleet",
    "local_router_config",
    "read_documents",
    "stand_in_for",
    "stand_ins",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_KINDS: dict[str, type[BaseModel]] = {
    "SLMSpecialist": SLMSpecialist,
    "RouterPolicy": RouterPolicy,
    "Budget": Budget,
}
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_LOADED = re.compile(r"successfully loaded '([^']+)'")


class ManifestError(ValueError):
    """A manifest is unreadable or invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Document:
    source: str
    """``file.yaml#2``: where the document came from, for error messages."""
    body: dict[str, Any]


@dataclass
class FleetManifests:
    namespace: str
    specialists: list[Item] = field(default_factory=list)
    policies: list[Item] = field(default_factory=list)
    budgets: list[Item] = field(default_factory=list)
    examples: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """ConfigMap keys in the folder, for ``domain.examplesFrom``."""
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, name) -> keys of the Secrets in the folder (external tiers' API keys)."""
    skipped: list[str] = field(default_factory=list)
    """``Kind/name`` of objects that mean nothing locally (PVCs, Secrets, ...)."""


def default_namespace(path: Path | str) -> str:
    """The folder's name as a DNS label: ``examples/retail-support`` -> ``retail-support``."""
    p = Path(path).resolve()
    name = p.stem if p.is_file() else p.name
    label = _DNS_LABEL.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or "default"


def manifest_files(path: Path | str) -> list[Path]:
    """The manifest files of ``path`` (a file, or a folder's files, as ``kubectl apply -f``)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ManifestError(f"{p}: no such file or directory")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
    if not files:
        raise ManifestError(f"{p}: no manifests (*.yaml, *.yml, *.json) in this folder")
    return files


def read_documents(path: Path | str) -> list[Document]:
    """Every YAML document of every manifest file, ``List`` objects flattened."""
    docs: list[Document] = []
    for file in manifest_files(path):
        try:
            loaded = list(yaml.safe_load_all(file.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{file}: not valid YAML: {exc}") from exc
        for index, body in enumerate(loaded):
            if body is None:
                continue
            where = f"{file.name}#{index + 1}"
            if not isinstance(body, dict):
                raise ManifestError(f"{where}: a manifest must be a mapping, got {type(body)}")
            if body.get("kind") == "List" or str(body.get("kind", "")).endswith("List"):
                for j, item in enumerate(body.get("items") or []):
                    docs.append(Document(f"{where}.items[{j}]", item))
            else:
                docs.append(Document(where, body))
    return docs


def _field_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:8]:
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def parse_fleet(docs: Iterable[Document], namespace: str) -> FleetManifests:
    """Validate the slmfleet objects with the API models (the CRD schemas' source)."""
    fleet = FleetManifests(namespace=namespace)
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        kind = doc.body.get("kind")
        meta = doc.body.get("metadata") or {}
        name = meta.get("name")
        api_version = str(doc.body.get("apiVersion", ""))
        if kind == "ConfigMap" and api_version == "v1":
            ns = meta.get("namespace") or namespace
            for key, text in (doc.body.get("data") or {}).items():
                fleet.examples[(ns, str(name), key)] = str(text)
            continue
        if kind == "Secret" and api_version == "v1":
            ns = meta.get("namespace") or namespace
            fleet.secrets[(ns, str(name))] = secret_data(doc, str(name))
            continue
        if kind not in _KINDS or not api_version.startswith("slmfleet.io/"):
            fleet.skipped.append(f"{kind}/{name}")
            continue
        if not name:
            raise ManifestError(f"{doc.source}: {kind} has no metadata.name")
        if (kind, name) in seen:
            raise ManifestError(
                f"{doc.source}: {kind} {name!r} is also defined in {seen[kind, name]}"
            )
        seen[kind, name] = doc.source
        body = {k: v for k, v in doc.body.items() if k not in ("metadata", "status")}
        try:
            obj = _KINDS[kind].model_validate(body)
        except ValidationError as exc:
            raise ManifestError(
                f"{doc.source}: {kind} {name!r} is invalid:\n{_field_errors(exc)}"
            ) from exc
        item = Item(
            namespace=meta.get("namespace") or namespace,
            name=name,
            spec=obj.spec,  # type: ignore[attr-defined]
            generation=1,
            labels=dict(meta.get("labels") or {}),
            created=f"{len(seen):06d}",  # file order decides contested model names
        )
        {
            "SLMSpecialist": fleet.specialists,
            "RouterPolicy": fleet.policies,
            "Budget": fleet.budgets,
        }[kind].append(item)
    if not fleet.specialists:
        raise ManifestError("no SLMSpecialist in the manifests: nothing to serve")
    if not fleet.policies:
        raise ManifestError("no RouterPolicy in the manifests: nothing routes to the specialists")
    return fleet


def secret_data(doc: Document, name: str) -> dict[str, str]:
    """A Secret manifest's keys (``stringData`` over base64 ``data``), names checked as
    the API server would: they become files of the router's secrets directory."""
    if not re.fullmatch(DNS_SUBDOMAIN, name) or len(name) > 253:
        raise ManifestError(f"{doc.source}: Secret {name!r}: not a valid Secret name")
    out: dict[str, str] = {}
    try:
        for key, value in (doc.body.get("data") or {}).items():
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ManifestError(f"{doc.source}: Secret {name!r}: data is not base64 text") from exc
    out.update({str(k): str(v) for k, v in (doc.body.get("stringData") or {}).items()})
    for key in out:
        if not re.fullmatch(CONFIG_KEY, key):
            raise ManifestError(f"{doc.source}: Secret {name!r}: invalid key {key!r}")
    return out


def write_secrets(fleet: FleetManifests, root: Path) -> Path:
    """``root/<namespace>/<name>/<key>`` for the router's ``--secrets dir:root``: the
    local equivalent of the API's namespaced Secrets (owner-only permissions)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for (namespace, name), data in fleet.secrets.items():
        folder = root / namespace / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for key, value in data.items():
            path = folder / key
            path.touch(mode=0o600)
            path.write_text(value)
    return root


def load_fleet(path: Path | str, namespace: str | None = None) -> FleetManifests:
    return parse_fleet(read_documents(path), namespace or default_namespace(path))


# -- stand-ins -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandInChoice:
    model: str
    """Model name inside Triton (the specialist's name)."""
    stand_in: StandIn
    why: str
    """One line for the progress output."""


def _label(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "answer"


def stand_in_for(
    item: Item, examples: dict[tuple[str, str, str], str] | None = None
) -> StandInChoice:
    spec = item.spec
    model = spec.model
    params = dict(model.parameters)
    kind = params.pop("standin", None)
    if model.backend == "python" and kind is not None:
        if kind not in KINDS:
            raise ManifestError(
                f"SLMSpecialist {item.name!r}: model.parameters.standin must be one of "
                f"{', '.join(KINDS)}, got {kind!r}"
            )
        return StandInChoice(item.name, StandIn(kind, params), f"{kind} stand-in")
    backend = f"{model.backend}" + (
        f"/{model.quantization}" if model.quantization != "none" else ""
    )
    if model.reasoning is not None:
        stand_in = StandIn.reasoner(
            start_marker=model.reasoning.start_marker, end_marker=model.reasoning.end_marker
        )
        return StandInChoice(item.name, stand_in, f"reasoner stand-in for {backend} {model.uri}")
    texts = list(spec.domain.examples)
    if spec.domain.examples_from:
        ref = spec.domain.examples_from
        text = (examples or {}).get((item.namespace, ref.name, ref.key), "")
        texts += [line.strip() for line in text.splitlines() if line.strip()]
    texts = texts or [k for k in spec.domain.keywords if k.strip()]
    if not texts:  # no territory of its own: a general model (an escalation tier)
        return StandInChoice(
            item.name,
            StandIn("generalist", {"display_name": item.name}),
            f"generalist stand-in for {backend} {model.uri} (no domain examples or keywords)",
        )
    label = _label(item.name)
    reply = spec.domain.description or f"an answer from {item.name}"
    stand_in = StandIn.domain({label: texts}, {label: reply})
    return StandInChoice(item.name, stand_in, f"domain stand-in for {backend} {model.uri}")


def stand_ins(fleet: FleetManifests) -> list[StandInChoice]:
    return [stand_in_for(s, fleet.examples) for s in fleet.specialists]


def local_router_config(fleet: FleetManifests, endpoint: str) -> RouterConfig:
    """What the operator would render with every specialist Ready on ``endpoint``
    (Secrets are not checked here: the router reports a missing one per request)."""
    ready = [
        Item(
            namespace=s.namespace,
            name=s.name,
            spec=s.spec.model_copy(
                update={"model": s.spec.model.model_copy(update={"backend": "python"})}
            ),
            generation=s.generation,
            labels=s.labels,
            status={"conditions": [{"type": "Ready", "status": "True"}]},
            created=s.created,
        )
        for s in fleet.specialists
    ]
    rendered = render_fleet(
        ready, fleet.policies, fleet.budgets, fleet.examples, endpoint_of=lambda _ns, _n: endpoint
    )
    problems = []
    for pid, status in rendered.policy_status.items():
        for cond in status.get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                problems.append(f"RouterPolicy {pid}: {cond.get('reason')}: {cond.get('message')}")
    for sid, problem in rendered.specialist_problems.items():
        problems.append(f"SLMSpecialist {sid}: {problem.reason}: {problem.message}")
    if problems:
        raise ManifestError("\n".join(problems))
    return rendered.config


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
    ) -> None:
        self.path = Path(path)
        self.port = port
        self.host = host
        self.fleet = load_fleet(self.path, namespace)
        self.choices = stand_ins(self.fleet)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="slmfleet-up-"))
        self.progress = progress or (lambda _msg: None)
        self.startup_timeout = startup_timeout
        self.triton: TritonServer | None = None
        self.router: RouterProcess | None = None
        self.config: RouterConfig | None = None
        self.on_request: Callable[[dict[str, Any]], None] | None = None
        self._tail: threading.Thread | None = None

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
            self._start_router()
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

    def _start_router(self) -> None:
        assert self.triton is not None
        self.config = local_router_config(self.fleet, self.triton.grpc_url)
        config_path = self.workdir / "router.json"
        config_path.write_text(self.config.model_dump_json(by_alias=True, exclude_none=True))
        self.progress(
            f"Router starting on {self.host}:{self.port} "
            f"(fitting the routing classifier on the specialists' domain examples)"
        )
        begin = time.monotonic()
        secrets = write_secrets(self.fleet, self.workdir / "secrets")
        self.router = RouterProcess(
            ["--config", str(config_path), "--log-level", "info", "--secrets", f"dir:{secrets}"],
            port=self.port,
            host=self.host,
            log_path=self.router_log,
            startup_timeout=self.startup_timeout,
        )
        self.router.start()
        self.progress(f"Router ready: classifier fitted ({time.monotonic() - begin:.1f}s)")
        self._tail = threading.Thread(target=self._follow_router_log, daemon=True)
        self._tail.start()

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
                        if "request_id" in record:
                            self.on_request(record)

    # -- run / stop -----------------------------------------------------------------------------
    def failure(self) -> str | None:
        """Why the fleet is down, or None while both processes run."""
        if self.triton is not None and not self.triton.is_alive():
            return f"tritonserver exited; log {self.triton.log_path}:\n{self.triton.log_tail()}"
        if self.router is not None and not self.router.alive():
            return f"the router exited; log {self.router_log}:\n{log_tail(self.router_log)}"
        return None

    def stop(self) -> None:
        router, self.router = self.router, None
        if router is not None and router.alive():
            begin = time.monotonic()
            router.stop()
            self.progress(f"  router stopped ({time.monotonic() - begin:.1f}s)")
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


__all__ += ["free_port", "pids", "port_is_free"]


def _claim_target(root: Path, sub: str, name: str) -> Path:
    """``root/sub``, refusing a ``sub`` that would land outside ``root``."""
    path = PurePosixPath(sub)
    target = root / path
    if (
        path.is_absolute()
        or ".." in path.parts
        or not target.resolve().is_relative_to(root.resolve())
    ):
        raise ManifestError(
            f"SLMSpecialist {name!r}: model.uri path {sub!r} must stay inside the claim "
            "(no '..' components, not absolute)"
        )
    return target


def export_stand_ins(
    fleet: FleetManifests, root: Path | str, claim: str | None = None
) -> list[Path]:
    """Write the code of every python-backend stand-in whose URI is ``pvc://CLAIM/PATH``
    into ``root/PATH/`` (``model.py`` + ``standin.py``): the content the fetcher copies
    into Triton's version directory. Returns the directories written."""
    from .models import _FILES, _SOURCES

    written = []
    for item in fleet.specialists:
        model = item.spec.model
        if model.backend != "python" or "standin" not in model.parameters:
            continue
        if not model.uri.startswith("pvc://"):
            continue
        uri_claim, _, sub = model.uri.removeprefix("pvc://").partition("/")
        if claim is not None and uri_claim != claim:
            continue
        target = _claim_target(Path(root), sub, item.name)
        target.mkdir(parents=True, exist_ok=True)
        for filename in _FILES:
            shutil.copyfile(_SOURCES / filename, target / filename)
        written.append(target)
    return written


__all__ += ["export_stand_ins"]
