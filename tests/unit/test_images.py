"""What can be checked of the Dockerfiles without a container engine: COPY sources exist
(and survive the build context's .dockerignore), pinned bases, a numeric non-root USER,
every ENTRYPOINT/CMD runs from the local install, and the slim images' requirement lists
cover every module their entry point imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
BIN = Path(sys.executable).parent
NAMES = ("operator", "router", "fetcher")
#: The module each image's entry point imports.
ENTRY_MODULE = {
    "operator": "slmfleet.controller",
    "router": "slmfleet.router.app",
    "fetcher": "slmfleet.fetch",
}


def instructions(name: str) -> list[tuple[str, str]]:
    text = (IMAGES / name / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def final_stage(name: str) -> list[tuple[str, str]]:
    ins = instructions(name)
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def args(name: str) -> dict[str, str]:
    return dict(
        rest.split("=", 1) for op, rest in instructions(name) if op == "ARG" and "=" in rest
    )


@pytest.mark.parametrize("name", NAMES)
def test_copy_sources_exist_and_are_in_the_context(name):
    ignore = (IMAGES / name / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context starts empty and lists what it needs"
    copies = [rest for op, rest in instructions(name) if op == "COPY"]
    assert copies
    for rest in copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        if "--from=" in rest:
            continue
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"{name}: COPY source {src} missing"
            top = src.split("/")[0]
            assert (
                src in included or top in included or any(src.startswith(i + "/") for i in included)
            ), f"{name}: {src} is excluded by Dockerfile.dockerignore"


@pytest.mark.parametrize("name", NAMES)
def test_pinned_bases(name):
    defaults = args(name)
    for op, rest in instructions(name):
        if op != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+[\w.-]*$", image), (
            f"{name}: {image} is not pinned to a patch release"
        )
        assert not image.endswith(":latest")


@pytest.mark.parametrize("name", NAMES)
def test_non_root_numeric_user(name):
    users = [rest for op, rest in final_stage(name) if op == "USER"]
    assert users, f"{name}: the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can be verified"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The chart's Pods run as this user too.
    helpers = (REPO / "charts/slmfleet/templates/_helpers.tpl").read_text()
    assert f"runAsUser: {uid}" in helpers


def command(name: str) -> list[str]:
    stage = dict(final_stage(name))
    entry = json.loads(stage["ENTRYPOINT"])  # exec form only: signals reach the process
    cmd = json.loads(stage.get("CMD", "[]"))
    return [*entry, *[c for c in cmd if c != "--help"]]


@pytest.mark.parametrize("name", NAMES)
def test_entrypoint_runs_from_the_local_install(name):
    argv = command(name)
    exe = BIN / argv[0]
    assert exe.exists(), f"{argv[0]} is not installed in the venv"
    result = subprocess.run(
        [str(exe), *argv[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def closure(names: set[str]) -> set[str]:
    """Installed distributions reachable from ``names`` through their requirements."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


#: Imported when present, inside try/except, by aiohttp/urllib3/httpx: not requirements.
#: And by redis-py's observability hooks (OpenTelemetry, whose SDK tries psutil) when
#: the router's tracing extras happen to be installed beside it.
OPTIONAL = {
    "brotli",
    "brotlicffi",
    "zstandard",
    "h2",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
    "psutil",
}


def module_owners() -> dict[str, str]:
    """Dotted module name -> distribution, from the installed files (RECORD), so that
    namespace packages such as ``google`` resolve to the right distribution."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for f in dist.files or []:
            parts = f.parts
            if f.suffix not in (".py", ".so") or ".." in parts or "bin" in parts[:1]:
                continue
            mod = ".".join(parts)[: -len(f.suffix)].split(".cpython")[0]
            mod = mod.removesuffix(".__init__")
            owners[mod] = name
    return owners


@pytest.mark.parametrize("name", ["operator", "fetcher"])
def test_slim_requirements_cover_the_imports(name):
    listed = [
        Requirement(line)
        for line in (IMAGES / name / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    project = pyproject_requirements()
    for req in listed:  # never a second, drifting copy of a version range
        key = canonicalize_name(req.name)
        if key in project:
            assert req.specifier == project[key].specifier, f"{req} vs {project[key]}"

    def imported(module: str) -> set[str]:
        probe = (
            f"import sys, json{', ' + module if module else ''}; "
            "print(json.dumps(sorted(m for m, v in sys.modules.items() "
            "if getattr(v, '__file__', None))))"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
        )
        return set(json.loads(out.stdout))

    # Minus what the bare interpreter loads (site hooks such as setuptools' .pth).
    modules = imported(ENTRY_MODULE[name]) - imported("")
    owners = module_owners()
    needed = (
        {
            owners[mod]
            for mod in modules
            if mod.split(".")[0] not in sys.stdlib_module_names and mod in owners
        }
        - {"slmfleet"}
        - OPTIONAL
    )
    missing = needed - closure({r.name for r in listed})
    assert not missing, f"{name} image lacks {sorted(missing)} (add to requirements.txt)"


def test_the_pool_sidecar_runs_on_the_fetcher_image():
    """A pool's ``repository`` sidecar is the fetcher image running slmfleet.pool.sync:
    it may import nothing the fetcher's slim install lacks (the standard library and
    slmfleet, whose optional clients load lazily as for the fetcher)."""
    probe = (
        "import sys, json, slmfleet.pool.sync; print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    bare = subprocess.run(
        [sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    extra = set(json.loads(out.stdout)) - set(json.loads(bare.stdout))
    roots = {m.split(".")[0] for m in extra}
    foreign = {r for r in roots if r not in sys.stdlib_module_names and r != "slmfleet"}
    assert not foreign, f"slmfleet.pool.sync imports {sorted(foreign)}"


def test_router_image_carries_the_static_table_where_the_router_looks():
    """The table distilled at build time lands in the directory the final stage copies
    and names in SLMFLEET_STATIC_CACHE (else every Pod distils it again at start)."""
    runs = [rest for op, rest in instructions("router") if op == "RUN"]
    (step,) = [r for r in runs if "slmfleet.router.static_embed" in r]
    built = step.split("slmfleet.router.static_embed", 1)[1].split()[0]
    final = final_stage("router")
    copies = [rest.split() for op, rest in final if op == "COPY" and "--from=build" in rest]
    assert [built, built] in [c[-2:] for c in copies]
    env = " ".join(rest for op, rest in final if op == "ENV")
    assert f"SLMFLEET_STATIC_CACHE={built}" in env
