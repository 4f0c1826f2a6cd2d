"""The two backends' differences: connecting, placeholders, types, locks, errors.

Queries are written once with ``?`` placeholders (``{J}`` for a JSON parameter) and
translated here. Each thread uses its own connection (the writer thread, the store's
small executor): no connection is shared between threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from .base import StoreError, StoreUnavailable


class Dialect:
    name = ""
    types: dict[str, str] = {}
    json_param = "?"
    for_update = ""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}

    # -- connections ---------------------------------------------------------------------
    def conn(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = self._connect()
            except Exception as exc:
                raise self.translate(exc) from exc
            self._local.conn = c
            with self._lock:
                self._all.append(c)
        return c

    def has_conn(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def stale(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the connection itself broke (worth one retry)."""
        return False

    def discard(self) -> None:
        """Forget this thread's connection (after a connection-level error)."""
        c = getattr(self._local, "conn", None)
        self._local.conn = None
        if c is not None:
            with self._lock:
                if c in self._all:
                    self._all.remove(c)
            with contextlib.suppress(Exception):
                c.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        self._local = threading.local()

    def _connect(self) -> Any:
        raise NotImplementedError

    # -- SQL -----------------------------------------------------------------------------
    def q(self, sql: str) -> str:
        out = self._cache.get(sql)
        if out is None:
            out = self._cache[sql] = self._translate_sql(sql)
        return out

    def _translate_sql(self, sql: str) -> str:
        return sql.replace("{J}", self.json_param)

    def ddl(self, sql: str) -> str:
        return sql.format(**self.types)

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, write: bool = True) -> Iterator[None]:
        raise NotImplementedError

    @contextlib.contextmanager
    def migration_lock(self, conn: Any) -> Iterator[None]:
        yield

    def translate(self, exc: BaseException) -> StoreError:
        return StoreError(str(exc))


class SQLite(Dialect):
    """One file, WAL journal, synchronous=FULL: a committed write survives a crash of
    the process (and of the machine). Several processes may share the file."""

    name = "sqlite"
    types = {"real": "REAL", "json": "TEXT", "serial": "INTEGER"}

    def __init__(self, path: str, *, max_bytes: int | None = None) -> None:
        super().__init__()
        if path in ("", ":memory:"):
            raise ValueError("the SQLite decision store needs a file path")
        self.path = path
        self.max_bytes = max_bytes
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=10000")
        if self.max_bytes:
            page = c.execute("PRAGMA page_size").fetchone()[0]
            c.execute(f"PRAGMA max_page_count={max(8, self.max_bytes // page)}")
        return c

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, write: bool = True) -> Iterator[None]:
        # IMMEDIATE takes the write lock first: the read inside sees the latest state and
        # no other writer can change the row before this transaction commits.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def translate(self, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        msg = str(exc)
        if isinstance(exc, sqlite3.OperationalError | OSError):
            return StoreUnavailable(f"sqlite: {msg}", full="full" in msg)
        return StoreError(f"sqlite: {msg}")


class Postgres(Dialect):
    name = "postgres"
    types = {"real": "DOUBLE PRECISION", "json": "JSONB", "serial": "BIGSERIAL"}
    json_param = "%s::jsonb"
    for_update = " FOR UPDATE"

    def __init__(self, url: str, *, password: str | None = None) -> None:
        super().__init__()
        import psycopg  # imported only when PostgreSQL is used

        self._psycopg = psycopg
        self.url = url
        self.password = password

    def _connect(self) -> Any:
        kw: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": 5,
            "application_name": "slmfleet",
            "options": "-c statement_timeout=15000 -c lock_timeout=10000",
        }
        if self.password:
            kw["password"] = self.password
        return self._psycopg.connect(self.url, **kw)

    def _translate_sql(self, sql: str) -> str:
        return sql.replace("{J}", "\x00").replace("?", "%s").replace("\x00", self.json_param)

    @contextlib.contextmanager
    def transaction(self, conn: Any, *, write: bool = True) -> Iterator[None]:
        with conn.transaction():
            yield

    @contextlib.contextmanager
    def migration_lock(self, conn: Any) -> Iterator[None]:
        # Replicas starting together must not race on CREATE TABLE IF NOT EXISTS.
        conn.execute("SELECT pg_advisory_lock(7418222031)")
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(7418222031)")

    def stale(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.OperationalError | self._psycopg.InterfaceError)

    def translate(self, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        errors = self._psycopg.errors
        if isinstance(exc, errors.DiskFull | errors.InsufficientResources):
            return StoreUnavailable(f"postgres: {exc}", full=True)
        if isinstance(exc, self._psycopg.OperationalError | errors.QueryCanceled | OSError):
            self.discard()
            return StoreUnavailable(f"postgres: {exc}".strip())
        if isinstance(exc, self._psycopg.InterfaceError):
            self.discard()
            return StoreUnavailable(f"postgres: {exc}")
        return StoreError(f"postgres: {exc}")


def dialect_for(url: str, *, password: str | None = None) -> Dialect:
    """``sqlite:///abs/path.db`` (``?max_mb=N`` caps its size), ``sqlite:rel/path.db``,
    or ``postgresql://user@host:5432/db`` (password here, in PGPASSWORD or ``password``)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path if parsed.netloc == "" else parsed.netloc + parsed.path)
        opts = parse_qs(parsed.query)
        max_mb = opts.get("max_mb", [None])[0]
        try:
            max_bytes = int(float(max_mb) * 1024 * 1024) if max_mb else None
        except ValueError:
            raise ValueError(f"sqlite URL: max_mb={max_mb!r} is not a number") from None
        return SQLite(path, max_bytes=max_bytes)
    if parsed.scheme in ("postgres", "postgresql"):
        return Postgres(url, password=password)
    raise ValueError(
        f"unsupported decision store URL scheme {parsed.scheme!r} (sqlite, postgresql)"
    )
