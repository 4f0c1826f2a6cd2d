"""The decision store over SQL: decisions, feedback and labelled data (cases are in
``cases_sql``). One implementation for SQLite and PostgreSQL; ``dialects`` holds the
differences. Every method is synchronous and runs in the caller's thread with that
thread's connection (the writer thread, or the store's executor via ``aio``).

Every value reaches SQL as a bound parameter; the only SQL text that varies is chosen
from fixed fragments (see ``cases_sql.list_cases``), so filters cannot inject SQL.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from ..record import COLUMNS
from .base import FeedbackInput, FeedbackRow, LabelledExample, StoreError
from .dialects import Dialect
from .schema import SCHEMA_VERSION, TABLES

T = TypeVar("T")

#: Rows per executemany inside a batch's transaction (the GIL is released in between).
SUB_BATCH = 64

_INSERT_DECISION = (
    f"INSERT INTO decisions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(['?'] * (len(COLUMNS) - 1))}, {{J}}) "
    "ON CONFLICT (request_id) DO NOTHING"
)

_FEEDBACK_COLS = "request_id, rating, label, answer, outcome, source, created_at, updated_at"
_UPSERT_FEEDBACK = (
    f"INSERT INTO feedback ({_FEEDBACK_COLS}) "
    "SELECT CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS TEXT), CAST(? AS TEXT), "
    "CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION) "
    "WHERE EXISTS (SELECT 1 FROM decisions WHERE request_id = ?) "
    "ON CONFLICT (request_id) DO UPDATE SET "
    "rating = COALESCE(excluded.rating, feedback.rating), "
    "label = COALESCE(excluded.label, feedback.label), "
    "answer = COALESCE(excluded.answer, feedback.answer), "
    "outcome = COALESCE(excluded.outcome, feedback.outcome), "
    "source = excluded.source, updated_at = excluded.updated_at "
    f"RETURNING {_FEEDBACK_COLS}"
)


def load_json(value: Any) -> Any:
    """JSON columns come back as text (SQLite) or already decoded (PostgreSQL JSONB)."""
    if value is None or isinstance(value, dict | list):
        return value
    return orjson.loads(value)


def _feedback(row: Any, *, created: bool) -> FeedbackRow:
    rating = None if row[1] is None else float(row[1])
    return FeedbackRow(
        row[0], rating, row[2], row[3], row[4], row[5], float(row[6]), float(row[7]), created
    )


class SqlStore:
    """The store. ``migrate()`` once at start; ``close()`` at the end."""

    def __init__(self, dialect: Dialect, *, executor_threads: int = 4) -> None:
        self.d = dialect
        self._executor = ThreadPoolExecutor(executor_threads, thread_name_prefix="slmfleet-store")
        self._migrated = False
        self._migrate_lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.d.name

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` with this thread's connection, errors as StoreError. The
        first call creates (or checks) the tables: a store that is down at start is
        retried by the next call, not fatal."""
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    self._migrate()
                    self._migrated = True
        reused = self.d.has_conn()
        conn = self.d.conn()
        try:
            return fn(conn)
        except StoreError:
            raise
        except Exception as exc:
            err = self.d.translate(exc)
            if not (reused and self.d.stale(exc)):
                raise err from exc
        # A connection kept from before broke (the server restarted): once more on a new
        # one. Every operation is safe to repeat (inserts of an id already committed do
        # nothing; case changes are decided again on the state they find).
        conn = self.d.conn()
        try:
            return fn(conn)
        except StoreError:
            raise
        except Exception as exc:
            raise self.d.translate(exc) from exc

    async def aio(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a store method in the store's executor (never on the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kw))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.d.close_all()

    def migrate(self) -> None:
        """Create or check the tables now (otherwise the first operation does)."""
        self._call(lambda conn: None)

    def _migrate(self) -> None:
        def run(conn: Any) -> None:
            with self.d.migration_lock(conn):
                for stmt in TABLES:
                    conn.execute(self.d.ddl(stmt))
                conn.execute(
                    self.d.q(
                        "INSERT INTO slmfleet_schema (component, version) VALUES (?, ?) "
                        "ON CONFLICT (component) DO NOTHING"
                    ),
                    ("decisions", SCHEMA_VERSION),
                )
                found = conn.execute(
                    self.d.q("SELECT version FROM slmfleet_schema WHERE component = ?"),
                    ("decisions",),
                ).fetchone()[0]
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"the decision store has schema {found}; this build knows {SCHEMA_VERSION}"
                    )

        conn = self.d.conn()
        try:
            run(conn)
        except StoreError:
            raise
        except Exception as exc:
            raise self.d.translate(exc) from exc

    def ping(self) -> None:
        self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- decisions -----------------------------------------------------------------------
    def write_decisions(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert a batch in one transaction (a request id already stored keeps its
        first decision)."""

        def run(conn: Any) -> None:
            with self.d.transaction(conn):
                cur = conn.cursor()
                sql = self.d.q(_INSERT_DECISION)
                for i in range(0, len(rows), SUB_BATCH):
                    if i:
                        time.sleep(0)  # give the GIL to the event loop between sub-batches
                    cur.executemany(sql, rows[i : i + SUB_BATCH])

        self._call(run)

    def get_decision(self, request_id: str) -> dict[str, Any] | None:
        row = self._call(
            lambda c: c.execute(
                self.d.q("SELECT record FROM decisions WHERE request_id = ?"), (request_id,)
            ).fetchone()
        )
        return load_json(row[0]) if row else None

    def count_decisions(self) -> int:
        return self._call(lambda c: c.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def decision_ids(self) -> set[str]:
        return self._call(
            lambda c: {r[0] for r in c.execute("SELECT request_id FROM decisions").fetchall()}
        )

    def prune(self, *, older_than: float | None, max_rows: int | None, chunk: int = 5000) -> int:
        """Delete decisions older than ``older_than`` and beyond the newest ``max_rows``,
        in chunks (short transactions); their feedback goes with them."""
        deleted = 0

        def delete_before(cutoff: float) -> int:
            def run(conn: Any) -> int:
                with self.d.transaction(conn):
                    cur = conn.execute(
                        self.d.q(
                            "DELETE FROM decisions WHERE request_id IN (SELECT request_id "
                            "FROM decisions WHERE ts < ? ORDER BY ts LIMIT ?)"
                        ),
                        (cutoff, chunk),
                    )
                    return cur.rowcount or 0

            return self._call(run)

        def cutoff_for_rows(n: int) -> float | None:
            row = self._call(
                lambda c: c.execute(
                    self.d.q("SELECT ts FROM decisions ORDER BY ts DESC LIMIT 1 OFFSET ?"), (n,)
                ).fetchone()
            )
            return None if row is None else float(row[0]) + 1e-9

        for cutoff in (older_than, cutoff_for_rows(max_rows) if max_rows else None):
            if cutoff is None:
                continue
            while True:
                n = delete_before(cutoff)
                deleted += n
                if n < chunk:
                    break
        return deleted

    def prune_oldest(self, fraction: float, *, at_least: int = 0) -> int:
        """Make room when the store is full: delete the oldest ``fraction`` of the
        decisions, and at least ``at_least`` of them."""
        total = self.count_decisions()
        drop = min(total, max(int(total * fraction), at_least))
        return self.prune(older_than=None, max_rows=total - drop) if drop else 0

    # -- feedback ------------------------------------------------------------------------
    def put_feedback(self, fb: FeedbackInput, now: float) -> FeedbackRow | None:
        """Store (or merge into) the request's feedback; None when no such decision is
        stored (unknown or expired id): then nothing is written."""

        def run(conn: Any) -> Any:
            with self.d.transaction(conn):
                return conn.execute(
                    self.d.q(_UPSERT_FEEDBACK),
                    (
                        fb.request_id,
                        fb.rating,
                        fb.label,
                        fb.answer,
                        fb.outcome,
                        fb.source,
                        now,
                        now,
                        fb.request_id,
                    ),
                ).fetchone()

        row = self._call(run)
        if row is None:
            return None
        return _feedback(row, created=float(row[6]) == now)

    def get_feedback(self, request_id: str) -> FeedbackRow | None:
        row = self._call(
            lambda c: c.execute(
                self.d.q(f"SELECT {_FEEDBACK_COLS} FROM feedback WHERE request_id = ?"),
                (request_id,),
            ).fetchone()
        )
        return None if row is None else _feedback(row, created=False)

    # -- labelled data -------------------------------------------------------------------
    def labelled(
        self,
        since: float = 0.0,
        limit: int = 1000,
        *,
        policies: Sequence[str] | None = None,
        newest: bool = False,
    ) -> list[LabelledExample]:
        """Resolved cases and feedback since ``since``, each joined to its decision,
        oldest first (at most ``limit`` of each source). ``policies``: only those
        policies' (filtered in SQL, so one policy's volume never fills another's
        window); ``newest``: the newest ``limit`` rather than the oldest."""
        names = list(policies or ())
        where_c = where_f = ""
        if policies is not None:
            marks = ", ".join("?" * len(names)) or "NULL"
            where_c = f" AND COALESCE(d.policy, c.policy) IN ({marks})"
            where_f = f" AND d.policy IN ({marks})"
        order = "DESC" if newest else "ASC"

        def run(conn: Any) -> tuple[list[Any], list[Any]]:
            reviews = conn.execute(
                self.d.q(
                    "SELECT c.id, c.request_id, c.policy, c.queue, c.resolved_at, c.resolved_by, "
                    "c.label, c.answer, c.note, d.record FROM cases c "
                    "LEFT JOIN decisions d ON d.request_id = c.request_id "
                    f"WHERE c.status = 'resolved' AND c.resolved_at > ?{where_c} "
                    f"ORDER BY c.resolved_at {order} LIMIT ?"
                ),
                (since, *names, limit),
            ).fetchall()
            feedback = conn.execute(
                self.d.q(
                    "SELECT f.request_id, d.policy, f.updated_at, f.source, f.label, f.answer, "
                    "f.rating, f.outcome, d.record FROM feedback f "
                    "JOIN decisions d ON d.request_id = f.request_id "
                    f"WHERE f.updated_at > ?{where_f} ORDER BY f.updated_at {order} LIMIT ?"
                ),
                (since, *names, limit),
            ).fetchall()
            if newest:
                reviews.reverse()
                feedback.reverse()
            return reviews, feedback

        reviews, feedback = self._call(run)
        out = [
            LabelledExample(
                source="review",
                request_id=r[1],
                at=r[4],
                policy=r[2],
                by=r[5],
                correct_label=r[6],
                correct_answer=r[7],
                rating=None,
                outcome=r[8],
                case_id=r[0],
                queue=r[3],
                decision=load_json(r[9]),
            )
            for r in reviews
        ]
        out += [
            LabelledExample(
                source="feedback",
                request_id=f[0],
                at=f[2],
                policy=f[1],
                by=f[3],
                correct_label=f[4],
                correct_answer=f[5],
                rating=f[6],
                outcome=f[7],
                case_id=None,
                queue=None,
                decision=load_json(f[8]),
            )
            for f in feedback
        ]
        out.sort(key=lambda e: e.at)
        return out
