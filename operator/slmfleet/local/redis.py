"""A local ``redis-server`` (the Debian package) for the shared spend ledger: started by
the tests and benchmarks, stopped with them. Persistence is what the chart runs: AOF
with ``appendfsync everysec``, so a restart keeps the spend (RPO: about one second).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .cluster import free_port
from .procs import stop_group
from .triton import _die_with_parent


class RedisStartError(RuntimeError):
    pass


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisStartError("redis-server is not installed (make system-deps)")
    return found


class RedisServer:
    """One redis-server on 127.0.0.1 with its data in ``directory``.

    ``password`` sets requirepass; ``tls`` is a (cert, key, ca) triple of files to serve
    TLS only (the plain port is then closed).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        appendonly: bool = True,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        args = [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            str(self.directory / "redis.log"),
            "--daemonize",
            "no",
        ]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout: float = 20.0) -> RedisServer:
        if self._proc is not None and self._proc.poll() is None:
            raise RedisStartError(f"redis-server already running (pid {self.pid})")
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisStartError(f"redis-server exited: {self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server not ready after {timeout}s: {self.log_tail()}")

    def _ready(self) -> bool:
        """Loaded (AOF replayed), not merely listening."""
        log = self.directory / "redis.log"
        if not log.exists() or "Ready to accept connections" not in log.read_text(errors="replace"):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "redis.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM: Redis flushes the AOF and exits."""
        stop_group(self._proc, timeout=10.0)
        self._rotate_log()

    def kill(self) -> None:
        """SIGKILL: no flush, as a crash or an evicted Pod would."""
        stop_group(self._proc, kill=True)
        self._rotate_log()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and never answers (a hung Redis)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def _rotate_log(self) -> None:
        # The next start waits for its own "Ready" line, not the previous run's.
        log = self.directory / "redis.log"
        if log.exists():
            log.rename(self.directory / f"redis.{time.time_ns()}.log")

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
