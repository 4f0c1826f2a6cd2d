"""Processes for the benchmarks: pinning, CPU accounting, LiteLLM in its own venv."""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from slmfleet.local import TritonServer
from slmfleet.local.procs import stop_group

LITELLM_VERSION = "1.106.0"  # 1.106.1+ and 1.105.x want a certifi newer than PyPI serves here
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slmfleet"
LITELLM_VENV = CACHE / "litellm-venv"
API_KEY = "sk-bench-0123456789abcdef"  # both proxies check it (LiteLLM refuses to run without)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_litellm() -> Path:
    """The LiteLLM proxy in its own venv, created (pinned version) when missing."""
    marker = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
    exe = LITELLM_VENV / "bin" / "litellm"
    if marker.is_file() and exe.is_file():
        return exe
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
    shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    marker.touch()
    return exe


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def stop_proc(proc: subprocess.Popen | None) -> None:
    stop_group(proc, timeout=15)


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = collections.defaultdict(list)
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(d.name)] = fields
        children[int(fields[1])].append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is not None:
            total += (int(f[11]) + int(f[12])) / tick
        todo.extend(children.get(p, ()))
    return total


def core_busy(cores: list[int], seconds: float = 2.0) -> dict[int, float]:
    """Fraction of time each core was busy over a short window (/proc/stat)."""

    def snap() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                v = [int(x) for x in vals]
                out[int(name[3:])] = (sum(v), v[3] + v[4])  # total, idle + iowait
        return out

    a = snap()
    time.sleep(seconds)
    b = snap()
    return {
        c: 1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0]) for c in cores if c in a and c in b
    }


class PinnedTriton(TritonServer):
    def __init__(self, *a: Any, core: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.core = core

    def command(self) -> list[str]:
        return ["taskset", "-c", str(self.core), *super().command()]


# ---- load generator --------------------------------------------------------------------


def versions(litellm_exe: Path | None) -> dict[str, str]:
    v = {"python": platform.python_version()}
    for pkg in ("grpcio", "tritonclient", "uvicorn", "uvloop", "httptools", "nvidia-pytriton"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            v[pkg] = importlib.metadata.version(pkg)
    if litellm_exe is not None:
        py = litellm_exe.parent / "python"
        code = (
            "import importlib.metadata as m;"
            "print(' '.join(p+'='+m.version(p) for p in ('litellm','uvicorn','uvloop','httpx')))"
        )
        with contextlib.suppress(Exception):
            got = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
            for kv in got.stdout.split():
                k, _, val = kv.partition("=")
                v[f"litellm-venv:{k}"] = val
    return v


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def litellm_config(fast_http: int | None, triton_http: int | None) -> str:
    lines = ["model_list:"]
    if fast_http is not None:
        lines += [
            "  - model_name: bench-fast",
            "    litellm_params:",
            "      model: openai/fast",
            f"      api_base: http://127.0.0.1:{fast_http}/v1",
            "      api_key: sk-upstream",
        ]
    if triton_http is not None:
        lines += [
            "  - model_name: bench-triton",
            "    litellm_params:",
            "      model: triton/generalist",
            f"      api_base: http://127.0.0.1:{triton_http}/v2/models/generalist/generate",
        ]
    lines += [
        "litellm_settings:",
        "  drop_params: true",
        "  telemetry: false",
        "  set_verbose: false",
        "general_settings:",
        f"  master_key: {API_KEY}",
    ]
    return "\n".join(lines) + "\n"
