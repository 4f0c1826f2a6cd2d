"""Run the real operator (``kopf run -m slmfleet.controller``) as a child process.

Used by integration tests, the benchmark and ``slmfleet up --cluster``. The liveness
endpoint doubles as a window on the operator: its ``writes`` probe counts API writes.

The built-in autoscaler is off unless ``extra_env`` turns it on (``SLMFLEET_AUTOSCALER``)
and says which router to scrape (``SLMFLEET_ROUTER_METRICS_URLS``): none of these users
runs a router the operator could reach, and an autoscaler without metrics would only
hold every specialist and say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .cluster import free_port
from .procs import stop_group


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        *,
        router_configmap: str = "slmfleet-system/slmfleet-router",
        log_path: Path | None = None,
        extra_env: dict[str, str] | None = None,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        """``namespaces``: watch only these (kopf ``--namespace``); empty: every one."""
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.router_configmap = router_configmap
        self.log_path = log_path or kubeconfig.parent / "operator.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SLMFLEET_ROUTER_CONFIGMAP": self.router_configmap,
            "SLMFLEET_AUTOSCALER": "off",
            **({"SLMFLEET_WATCH_NAMESPACES": ",".join(self.namespaces)} if self.namespaces else {}),
            **self.extra_env,
        }
        scope = [f"--namespace={n}" for n in self.namespaces] or ["--all-namespaces"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "kopf", "run", "-m", "slmfleet.controller",
                "--standalone", *scope,
                f"--liveness=http://127.0.0.1:{self.port}/healthz",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                self.probe()
                return
            time.sleep(0.2)
        raise TimeoutError(f"operator did not become live:\n{self.log_tail()}")

    def probe(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            return json.loads(r.read())

    def writes(self) -> int:
        return int(self.probe()["writes"])

    def rss_bytes(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(s for s in status.splitlines() if s.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024  # peak resident set size

    def cpu_seconds(self) -> float:
        """User + system CPU time the operator has used: a figure less noisy than wall
        time on a shared machine."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, *, kill: bool = False) -> None:
        stop_group(self.proc, timeout=15, kill=kill)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
