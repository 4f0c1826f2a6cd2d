"""Where the configuration comes from: a file (polled) or the operator's ConfigMap (watched).

Both hand raw ``router.json`` bytes to an async ``apply`` callback; parsing, fitting
and the atomic swap happen there. Polling instead of inotify keeps it working on every
volume type, including ConfigMap mounts whose files are swapped through symlinks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..api.routerconfig import CONFIG_KEY

log = logging.getLogger("slmfleet.router")

Apply = Callable[[bytes], Awaitable[None]]


class FileSource:
    def __init__(self, path: str | Path, *, interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.interval_s = interval_s

    def read(self) -> bytes:
        return self.path.read_bytes()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows the ..data symlink of ConfigMap volumes
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def run(self, apply: Apply, *, initial: bool = True) -> None:
        seen = self._stamp() if not initial else None
        while True:
            stamp = self._stamp()
            if stamp is not None and stamp != seen:
                seen = stamp
                try:
                    raw = await asyncio.to_thread(self.read)
                except OSError as exc:
                    log.warning("cannot read %s: %s", self.path, exc)
                else:
                    await apply(raw)
            await asyncio.sleep(self.interval_s)


class ConfigMapSource:
    """Watch one ConfigMap with the kubernetes client in a thread (a watch, not polling,
    so a policy change reaches the router well within 2 s)."""

    def __init__(self, namespace: str, name: str, *, key: str = CONFIG_KEY) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key
        self._stop = threading.Event()

    def _client(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return client.CoreV1Api()

    def _watch(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
        from kubernetes import watch

        api = self._client()
        while not self._stop.is_set():
            try:
                w = watch.Watch()
                for event in w.stream(
                    api.list_namespaced_config_map,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        w.stop()
                        return
                    obj = event["object"]
                    data = (obj.data or {}) if event["type"] in ("ADDED", "MODIFIED") else {}
                    raw = data.get(self.key)
                    if raw is not None:
                        loop.call_soon_threadsafe(queue.put_nowait, raw.encode())
            except Exception as exc:  # API hiccups: log, back off, re-watch
                log.warning("configmap watch %s/%s: %s", self.namespace, self.name, exc)
                self._stop.wait(1.0)

    async def run(self, apply: Apply) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        thread = threading.Thread(
            target=self._watch, args=(loop, queue), daemon=True, name="configmap-watch"
        )
        thread.start()
        try:
            while True:
                raw = await queue.get()
                while not queue.empty():  # coalesce bursts: only the newest matters
                    raw = queue.get_nowait()
                await apply(raw)
        finally:
            self._stop.set()
