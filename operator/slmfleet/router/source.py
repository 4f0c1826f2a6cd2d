"""Where the configuration comes from: a file (polled) or the operator's fragments
(watched through the Kubernetes API).

Both hand raw ``router.json`` bytes to an async ``apply`` callback; parsing, fitting
and the atomic swap happen there. The fragment source assembles the valid fragments
(``api.fragments.assemble``) and leaves out each invalid one with a log line and a
metric, so one object's broken fragment never keeps the rest of the fleet from being
served. Polling instead of inotify keeps the file source working on every volume type,
including ConfigMap mounts whose files are swapped through symlinks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from ..api.fragments import FRAGMENT_KEY, FRAGMENT_LABEL, assemble
from .metrics import REGISTRY

log = logging.getLogger("slmfleet.router")

Apply = Callable[[bytes], Awaitable[Any]]

FRAGMENTS = Gauge(
    "slmfleet_router_config_fragments",
    "Configuration fragments by state: served, or rejected (left out, see the log).",
    ["state"],
    registry=REGISTRY,
)


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


def assemble_bytes(fragments: dict[str, str], reported: dict[str, str]) -> bytes:
    """The router.json of the valid fragments; logs each newly rejected one once."""
    assembly = assemble(fragments)
    for name, reason in sorted(assembly.rejected.items()):
        if reported.get(name) != reason:
            log.error("configuration fragment %s left out: %s", name, reason)
    reported.clear()
    reported.update(assembly.rejected)
    FRAGMENTS.labels("served").set(len(fragments) - len(assembly.rejected))
    FRAGMENTS.labels("rejected").set(len(assembly.rejected))
    return assembly.config.model_dump_json(by_alias=True, exclude_none=True).encode()


class ConfigMapSource:
    """Watch the operator's fragment ConfigMaps (``<namespace>``, label
    ``slmfleet.io/router-config=<name>``) in a thread: list, then watch from the
    list's resourceVersion, so the router never serves a half-listed fleet; a watch
    that expires re-lists. A policy change reaches the router well within 2 s."""

    def __init__(self, namespace: str, name: str, *, key: str = FRAGMENT_KEY) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key
        self._stop = threading.Event()

    @property
    def selector(self) -> str:
        return f"{FRAGMENT_LABEL}={self.name}"

    def _client(self) -> Any:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return client.CoreV1Api()

    def _watch(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, str]]) -> None:
        from kubernetes import watch

        api = self._client()

        def publish(state: dict[str, str]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, dict(state))

        while not self._stop.is_set():
            try:
                listed = api.list_namespaced_config_map(
                    self.namespace, label_selector=self.selector
                )
                state = {cm.metadata.name: (cm.data or {}).get(self.key, "") for cm in listed.items}
                publish(state)
                w = watch.Watch()
                for event in w.stream(
                    api.list_namespaced_config_map,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        w.stop()
                        return
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        state.pop(obj.metadata.name, None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        state[obj.metadata.name] = (obj.data or {}).get(self.key, "")
                    else:
                        continue
                    publish(state)
            except Exception as exc:  # API hiccups, expired watches: log, back off, re-list
                log.warning("configmap watch %s/%s: %s", self.namespace, self.selector, exc)
                self._stop.wait(1.0)

    async def run(self, apply: Apply) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        reported: dict[str, str] = {}
        thread = threading.Thread(
            target=self._watch, args=(loop, queue), daemon=True, name="configmap-watch"
        )
        thread.start()
        try:
            while True:
                state = await queue.get()
                while not queue.empty():  # coalesce bursts: only the newest matters
                    state = queue.get_nowait()
                raw = await asyncio.to_thread(assemble_bytes, state, reported)
                await apply(raw)
        finally:
            self._stop.set()
