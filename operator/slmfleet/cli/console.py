"""The CLI's console and signal handling: progress lines that reach a pipe at once,
Ctrl-C as an exception the commands clean up after, and a cleanup a second Ctrl-C
cannot cut short."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class Console:
    """Progress lines, flushed at once (the output is often a pipe: make, CI, tests)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @property
    def tty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())


# -- signals -----------------------------------------------------------------------------------


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


@contextlib.contextmanager
def on_signals(handler: Any) -> Iterator[None]:
    """Handle SIGINT and SIGTERM with ``handler`` while the body runs."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into ``Stop`` while the body runs."""

    def raise_stop(signum: int, frame: Any) -> None:
        raise Stop(signal.Signals(signum).name)

    with on_signals(raise_stop):
        yield


@contextlib.contextmanager
def shielded(say: Console) -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C only says so."""

    def patience(signum: int, frame: Any) -> None:
        say("  (still stopping; the children are being shut down)")

    with on_signals(patience):
        yield
