"""Stopping the child processes the local tools start (each in its own session)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(
    proc: subprocess.Popen[bytes] | None, *, timeout: float = 10.0, kill: bool = False
) -> None:
    """SIGTERM the process group (SIGKILL with ``kill``), then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
