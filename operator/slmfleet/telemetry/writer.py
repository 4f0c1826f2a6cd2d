"""The decision writer: decision records go to the store off the request path.

``submit`` is all the request path pays: a bounded append under a lock (a few
microseconds: p50 2.8-3.4 us, p99 20-25 us in benchmarks/results/decision_log.md). The
backlog gauge costs it nothing: it is read from the buffer when scraped. A thread of its own takes
batches from the buffer, encodes them (content policy, JSON) and writes each batch in
one transaction. Nothing waits on the store:

- the buffer is bounded by records and by the text it holds; when it is full (the
  store is slow or down) a new record is dropped and counted
  (``slmfleet_router_decisions_dropped_total{reason="buffer_full"}``), never waited for;
- a batch the store cannot take now (down, locked, full) is kept and retried with
  backoff while new records queue behind it; when the store is full the writer
  deletes the oldest tenth of the decisions once per retry to make room;
- ``close`` flushes what is buffered, for at most ``timeout`` seconds;
- the thread gives the GIL up every few records it encodes (and between the store's
  sub-batches), so the event loop never waits long behind it.

What a crash (kill -9) can lose: the records not yet written, i.e. those submitted in
the last flush interval (0.2 s by default) plus the batch being written; while the
store is down, up to the whole buffer. A record reported by ``on_flush`` is committed.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import metrics as m
from .record import DecisionRecord, to_row
from .settings import DecisionLogSettings
from .store import Store, StoreError, StoreUnavailable

log = logging.getLogger("slmfleet.telemetry.writer")

MAX_BACKOFF_S = 5.0
#: The writer thread gives the GIL up this often while encoding a batch. Without it the
#: event loop's thread could wait a whole switch interval (5 ms) for the GIL behind it.
YIELD_EVERY = 16


class DecisionWriter:
    def __init__(
        self,
        store: Store,
        settings: DecisionLogSettings | None = None,
        *,
        on_flush: Callable[[list[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.s = settings or DecisionLogSettings()
        self.on_flush = on_flush
        self.clock = clock
        self._buf: collections.deque[DecisionRecord] = collections.deque()
        self._lock = threading.Lock()
        self._in_bytes = 0
        self._out_bytes = 0
        self._submitted = 0
        self._settled = 0  # written or dropped
        self._settled_cv = threading.Condition()
        self._batch: list[DecisionRecord] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped: dict[str, int] = {"buffer_full": 0, "store_error": 0, "shutdown": 0}
        self.healthy = True
        self.last_error: str | None = None
        self.last_write_at: float | None = None
        self._next_prune = 0.0
        m.DECISION_STORE_UP.set(1)
        # The gauge reads the backlog when scraped, so it is always current and submit
        # pays nothing for it. A weak reference: the gauge must not keep a closed writer
        # (and its store) alive; the newest writer of the process is the one shown.
        me = weakref.ref(self)
        m.DECISION_BUFFER.set_function(lambda: w.backlog() if (w := me()) is not None else 0)

    # -- request path --------------------------------------------------------------------
    def submit(self, record: DecisionRecord) -> bool:
        """Queue ``record`` for writing; False (and counted) when the buffer is full.
        Never blocks on the store."""
        size = record.size_hint()
        with self._lock:
            if (
                len(self._buf) >= self.s.buffer_max
                or self._in_bytes - self._out_bytes + size > self.s.buffer_max_bytes
                or self._stop.is_set()
            ):
                reason = "shutdown" if self._stop.is_set() else "buffer_full"
                self.dropped[reason] += 1
                m.DECISIONS_DROPPED.labels(reason).inc()
                return False
            self._buf.append(record)
            self._in_bytes += size
            self._submitted += 1
        if len(self._buf) >= self.s.batch_max:
            self._wake.set()
        return True

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> DecisionWriter:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="slmfleet-decision-writer", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is buffered (for at most ``timeout`` s), then stop the thread;
        records still unwritten then are counted as dropped (reason shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None  # a thread stuck in the store is a daemon; let it go
        with self._lock:
            left = len(self._buf) + len(self._batch)
            self._buf.clear()
            self._batch = []
        if left:
            self.dropped["shutdown"] += left
            m.DECISIONS_DROPPED.labels("shutdown").inc(left)
            log.warning("decision log: %d records not written at shutdown", left)
        self._settle(left)

    def wait_flushed(self, timeout: float) -> bool:
        """Block (a worker thread, never the event loop) until every record submitted
        before the call is written or dropped; False on timeout."""
        target = self._submitted
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._settled_cv:
            while self._settled < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled_cv.wait(left)
        return True

    def backlog(self) -> int:
        """Records submitted and not yet written or dropped (the buffer and the batch in
        flight): ``slmfleet_router_decision_buffer_records``."""
        return len(self._buf) + len(self._batch)

    def pending(self, request_id: str) -> bool:
        """True while a record of ``request_id`` is buffered and not yet written."""
        try:
            queued = list(self._buf) + list(self._batch)
        except RuntimeError:  # mutated while copied: look again
            queued = list(self._buf) + list(self._batch)
        return any(r.request_id == request_id for r in queued)

    def health(self) -> dict[str, Any]:
        """The readiness detail: requests are served whatever this says."""
        return {
            "ok": self.healthy,
            "backend": self.store.backend,
            "buffered": self.backlog(),
            "written": self.written,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
            "last_write_at": self.last_write_at,
        }

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                # Backing off: only close() cuts it short (new records do not).
                self._stop.wait(backoff)
            else:
                self._wake.wait(self.s.flush_interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            before = self.written
            ok = self._drain()
            if ok:
                backoff = 0.0
                self._maybe_prune()
            elif self.written > before:
                backoff = 0.05  # progress before this failure: start backing off afresh
            else:
                backoff = min(MAX_BACKOFF_S, max(0.05, backoff * 2 or 0.1))
            if stopping and (ok and not self._buf and not self._batch):
                return
            if stopping and not ok:
                # Keep trying until close() gives up on us (its timeout).
                time.sleep(min(backoff, 0.5))

    def _drain(self) -> bool:
        """Write batches until the buffer is empty; False when the store failed."""
        while True:
            if not self._batch:
                with self._lock:
                    n = min(len(self._buf), self.s.batch_max)
                    self._batch = [self._buf.popleft() for _ in range(n)]
            if not self._batch:
                return True
            if not self._write(self._batch):
                return False
            self._batch = []

    def _write(self, batch: list[DecisionRecord]) -> bool:
        rows = []
        for i, r in enumerate(batch):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # let the event loop's thread have the GIL (see module doc)
            try:
                rows.append(to_row(r, self.s.hash_key))
            except Exception:  # a record that cannot be encoded: drop it, keep the rest
                log.exception("decision log: cannot encode %s", getattr(r, "request_id", "?"))
        t0 = time.perf_counter()
        try:
            self.store.write_decisions(rows)
        except StoreUnavailable as exc:
            self._unhealthy(str(exc))
            if exc.full:
                self._make_room(len(batch))
            return False
        except StoreError as exc:
            # Refused for good (not a transient failure): drop this batch, go on.
            log.error("decision log: batch of %d refused: %s", len(batch), exc)
            self._unhealthy(str(exc))
            self.dropped["store_error"] += len(batch)
            m.DECISIONS_DROPPED.labels("store_error").inc(len(batch))
            self._done(batch)
            return True
        m.DECISION_BATCH_SECONDS.observe(time.perf_counter() - t0)
        self.written += len(rows)
        m.DECISIONS_WRITTEN.inc(len(rows))
        self.last_write_at = self.clock()
        if not self.healthy:
            log.info("decision log: store is writable again")
        self.healthy = True
        self.last_error = None
        m.DECISION_STORE_UP.set(1)
        self._done(batch)
        if self.on_flush is not None:
            self.on_flush([r.request_id for r in batch])
        return True

    def _done(self, batch: list[DecisionRecord]) -> None:
        with self._lock:
            self._out_bytes += sum(r.size_hint() for r in batch)
        self._settle(len(batch))

    def _settle(self, n: int) -> None:
        with self._settled_cv:
            self._settled += n
            self._settled_cv.notify_all()

    def _unhealthy(self, error: str) -> None:
        if self.healthy:
            log.warning("decision log: store failed, buffering: %s", error)
        self.healthy = False
        self.last_error = error
        m.DECISION_STORE_UP.set(0)

    def _make_room(self, batch: int) -> None:
        # A tenth of the decisions, and at least twice the batch waiting: freed pages are
        # only reused when whole, so deleting exactly a batch's worth may not be enough.
        try:
            n = self.store.prune_oldest(0.1, at_least=2 * batch)
            log.warning("decision log: store full, deleted the oldest %d decisions", n)
        except StoreError as exc:
            log.warning("decision log: store full and cannot make room: %s", exc)

    def _maybe_prune(self) -> None:
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + self.s.retention_interval_s
        try:
            n = self.store.prune(
                older_than=now - self.s.retention_days * 86400,
                max_rows=self.s.retention_max_rows or None,
            )
            if n:
                log.info("decision log: retention deleted %d decisions", n)
        except StoreError as exc:
            log.warning("decision log: retention failed: %s", exc)
