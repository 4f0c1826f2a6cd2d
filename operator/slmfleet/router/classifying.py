"""Routing classification without blocking the event loop.

Per request, in order:

1. **Cache**: an LRU per classifier of recent decisions, keyed by the normalised
   routing text (lower case, whitespace collapsed: the classifier's own tokenisers
   ignore both, so a hit is exactly what classifying would give).
2. **Quick stages, inline**: a classifier that offers ``quick(text)`` (staged.py: the
   TF-IDF stage, then the static-embedding stage) decides alone when one of them is
   confident, and says which (``cheap`` or ``static``). It runs on the loop only for
   texts up to ``inline_chars`` long, where it costs a few tenths of a millisecond.
3. **Worker**: everything else goes to one worker thread through a bounded queue. The
   worker takes whatever is queued when it comes free (micro-batches, no waiting) and
   runs the classifier's ``predict_staged`` (the quick stages for texts that skipped
   them, then the embedding model for the uncertain rest, batched), ``predict_many`` or
   ``predict``. The encoder releases the GIL while it computes, so the loop keeps
   serving. A full queue answers 503 (``overloaded``) at once instead of letting
   latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import metrics as m
from .errors import RouterError

log = logging.getLogger("slmfleet.router")

#: Texts up to this long get the quick stages on the event loop (bounded cost).
INLINE_CHARS = 400
CACHE_SIZE = 4096
MAX_QUEUE = 256
"""~0.6 s of work at ~2.5 ms a full-stage decision: past that, 503 at once."""
MAX_BATCH = 16


def normalise(text: str) -> str:
    """The cache key and the text classified: lower case, single spaces, stripped."""
    return " ".join(text.split()).lower()


@dataclass(eq=False)
class _Job:
    clf: Any
    text: str
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[Any]
    cheap_done: bool
    cancelled: bool = field(default=False)


def _deliver(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, error in results:
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)


class ClassifierService:
    """See the module docstring. One per router process; ``close()`` stops the worker."""

    def __init__(
        self,
        *,
        cache_size: int = CACHE_SIZE,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        inline_chars: int = INLINE_CHARS,
    ) -> None:
        self.cache_size = cache_size
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.inline_chars = inline_chars
        self._caches: weakref.WeakKeyDictionary[Any, OrderedDict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the request path (event loop) --------------------------------------------------
    async def scores(self, policy: str, clf: Any, text: str) -> tuple[Mapping[str, float], str]:
        """(scores per specialist id, the stage that decided: cache | cheap | static |
        full)."""
        key = normalise(text)
        cache = self._cache(clf)
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            m.bound(m.CLASSIFIER_DECISIONS, policy, "cache").inc()
            return hit.scores, "cache"
        quick = getattr(clf, "quick", None)
        inline = quick is not None and len(key) <= self.inline_chars
        if inline:
            q = quick(key)
            if q is not None:
                r, stage = q
                self._remember(cache, key, r)
                m.bound(m.CLASSIFIER_DECISIONS, policy, stage).inc()
                return r.scores, stage
        r, stage = await self._submit(clf, key, cheap_done=inline or quick is None)
        self._remember(cache, key, r)
        m.bound(m.CLASSIFIER_DECISIONS, policy, stage).inc()
        return r.scores, stage

    def _cache(self, clf: Any) -> OrderedDict[str, Any]:
        cache = self._caches.get(clf)
        if cache is None:
            cache = self._caches[clf] = OrderedDict()
        return cache

    def _remember(self, cache: OrderedDict[str, Any], key: str, r: Any) -> None:
        cache[key] = r
        if len(cache) > self.cache_size:
            cache.popitem(last=False)

    async def _submit(self, clf: Any, text: str, *, cheap_done: bool) -> tuple[Any, str]:
        if self._q.qsize() >= self.max_queue:
            m.CLASSIFIER_SHED.inc()
            raise RouterError(
                503,
                "the router is overloaded (routing classifier queue full); retry shortly",
                type="server_error",
                code="overloaded",
                headers={"retry-after": "1"},
            )
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        job = _Job(clf, text, loop, loop.create_future(), cheap_done)
        self._q.put(job)
        m.CLASSIFIER_QUEUE.set(self._q.qsize())
        try:
            return await job.fut
        except asyncio.CancelledError:
            job.cancelled = True  # the worker skips it if it has not started it
            raise

    # -- the worker (its own thread) ----------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="slmfleet-classifier", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        t = self._thread
        if t is not None and t.is_alive():
            self._q.put(None)
            t.join(timeout=5)
        self._thread = None

    def _work(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            m.CLASSIFIER_QUEUE.set(self._q.qsize())
            live = [j for j in batch if not j.cancelled]
            if live:
                m.CLASSIFIER_BATCH.observe(len(live))
                self._run_batch(live)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(id(j.clf), []).append(j)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for group in groups.values():
            clf = group[0].clf
            texts = [j.text for j in group]
            try:
                staged = getattr(clf, "predict_staged", None)
                if staged is not None:
                    results = staged(texts, cheap_done=[j.cheap_done for j in group])
                else:
                    many = getattr(clf, "predict_many", None)
                    rs = many(texts) if many is not None else [clf.predict(t) for t in texts]
                    results = [(r, "full") for r in rs]
                out = [(j.fut, res, None) for j, res in zip(group, results, strict=True)]
            except Exception as exc:  # a classifier bug fails its requests, not the worker
                log.exception("routing classifier failed on a batch of %d", len(group))
                out = [(j.fut, None, exc) for j in group]
            for j, item in zip(group, out, strict=True):
                by_loop.setdefault(j.loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_deliver, items)
