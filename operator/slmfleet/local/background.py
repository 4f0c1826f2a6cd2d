"""A coroutine loop on a daemon thread of its own, for the local fleet's control loops
(residency, pools) that run beside a blocking caller (``slmfleet up``, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Self


class BackgroundLoop:
    """Subclasses define ``async run()``, which returns once ``self._stop`` is set."""

    thread_name = "background"
    join_timeout_s = 10.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def run(self) -> Any:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=self.join_timeout_s)
            self._thread = None
