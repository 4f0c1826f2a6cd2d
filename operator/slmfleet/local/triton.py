"""Run the real ``tritonserver`` binary from the ``nvidia-pytriton`` wheel on this machine.

The wheel ships the server and the Python backend but not in a layout ``tritonserver``
can use on a repository we write ourselves: the backend directory lacks the stub, the
stub links the system libpython instead of the running interpreter's, and its embedded
interpreter finds site-packages from the first ``python3`` on PATH. This module fixes
all of that (see docs/triton-local.md) so tests and demos start a server with no hand
steps, on the same config.pbtxt the operator deploys.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["TritonServer", "TritonStartError", "backend_directory", "free_port"]

_PR_SET_PDEATHSIG = 1
_SHM_DIR = Path("/dev/shm")


class TritonStartError(RuntimeError):
    """The server died or never became ready; the message carries the log tail."""


def _wheel_paths() -> tuple[Path, Path]:
    """(pytriton/tritonserver, site-packages/nvidia_pytriton.libs) without importing pytriton."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed (pip install nvidia-pytriton)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slmfleet" / "triton-backends"


def backend_directory(cache_root: Path | None = None) -> Path:
    """A ``--backend-directory`` whose ``python/`` holds the wheel's backend plus our stub.

    Built once per (wheel version, Python version) and reused; built in a temporary
    directory and renamed into place so concurrent test sessions never see half a copy.
    """
    server_dir, _ = _wheel_paths()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonStartError(f"the pytriton wheel has no Python backend stub for {version}")
    source = server_dir / "backends" / "python"
    try:
        wheel_version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        wheel_version = "unknown"
    # The key changes when the wheel is reinstalled elsewhere or upgraded.
    digest = hashlib.sha256(
        f"{source.resolve()}:{(source / 'libtriton_python.so').stat().st_mtime_ns}".encode()
    ).hexdigest()[:12]
    root = cache_root or _cache_root()
    target = root / f"pytriton-{wheel_version}-py{version}-{digest}"
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        shutil.copytree(source, staging / "python", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "python" / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); fine for tests, not a lease."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _python_env_bin() -> Path:
    """bin/ of the environment the models run in: the venv, not the base interpreter."""
    candidate = Path(sys.prefix) / "bin"
    if (candidate / "python3").exists():
        return candidate
    return Path(sys.executable).parent


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """Runs in the child: take tritonserver down if the test process dies first."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServer:
    """One local ``tritonserver`` process serving a model repository directory.

    Use as a context manager or call start()/stop(). Every model in the repository is
    loaded at start (explicit control mode, so tests may also load and unload models
    through the repository API).
    """

    def __init__(
        self,
        model_repository: Path | str,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | str | None = None,
        log_verbose: int = 0,
        startup_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.shm_prefix = f"slmfleet_{uuid.uuid4().hex[:12]}_"
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="slmfleet-tritonserver-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.log_verbose = log_verbose
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        """host:port, as tritonclient.grpc expects."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus scrape URL (including /metrics)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- process -----------------------------------------------------------------------
    def command(self) -> list[str]:
        server_dir, _ = _wheel_paths()
        return [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_directory()}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout) - 2)}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """os.environ plus the library and interpreter paths the stub needs."""
        server_dir, wheel_libs = _wheel_paths()
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR"), str(wheel_libs), str(server_dir / "lib")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        env["PATH"] = f"{_python_env_bin()}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def start(self) -> TritonServer:
        """Start the server and block until /v2/health/ready answers 200."""
        if self.is_alive():
            raise RuntimeError(f"tritonserver already running (pid {self.pid})")
        if not self.model_repository.is_dir():
            raise TritonStartError(f"model repository {self.model_repository} does not exist")
        begin = time.monotonic()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches the stubs too
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(begin)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - begin
        return self

    def _wait_ready(self, begin: float) -> None:
        url = f"{self.http_url}/v2/health/ready"
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {code} before becoming ready; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if self.is_ready(url):
                return
            if time.monotonic() - begin > self.startup_timeout:
                raise TritonStartError(
                    f"tritonserver not ready after {self.startup_timeout:.0f}s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def is_ready(self, url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(
                url or f"{self.http_url}/v2/health/ready", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL the group after stop_timeout.

        Returns the exit code; removes the Python backend's /dev/shm regions.
        """
        proc, code = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.stop_timeout)
            # Stubs may outlive a killed server; the group is ours (start_new_session).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        self._cleanup_shm()
        return code

    def _cleanup_shm(self) -> None:
        for path in _SHM_DIR.glob(f"*{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                path.unlink()

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"TritonServer({self.model_repository}, grpc={self.grpc_url}, {state})"
