"""Run the real router (``python -m slmfleet.router``) as a child process.

One launcher for ``slmfleet up``, the integration tests and the benchmarks: start it
on a config file or a ConfigMap, wait for ``/readyz``, stop it as a process group.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .procs import stop_group


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RouterProcess:
    def __init__(
        self,
        source: list[str],
        *,
        port: int,
        log_path: Path,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 300.0,
    ) -> None:
        """``source`` is ``["--config", FILE]`` or ``["--configmap", "NS/NAME"]``."""
        self.source = source
        self.port = port
        self.host = host
        self.log_path = log_path
        self.env = env
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RouterProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "slmfleet.router", *self.source,
                 "--host", self.host, "--port", str(self.port), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env,
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        while not self.ready():
            if not self.alive():
                code = self.proc.returncode
                raise RuntimeError(
                    f"the router exited with code {code}; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router was not ready in time:\n{log_tail(self.log_path)}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        url = f"{self.url}/readyz"
        with (
            contextlib.suppress(OSError, ValueError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            return json.loads(resp.read() or b"null").get("status") == "ready"
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_group(proc)
