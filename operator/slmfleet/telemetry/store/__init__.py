"""The decision store: decisions, feedback and review cases behind one interface.

``open_store(url)`` gives a ``Store`` for ``sqlite:///path.db`` (one router,
``slmfleet up``: the embedded default) or ``postgresql://...`` (a cluster).
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    CaseFilter,
    FeedbackInput,
    FeedbackRow,
    LabelledExample,
    QueueStat,
    StoreError,
    StoreUnavailable,
)
from .cases_sql import CaseSql
from .dialects import dialect_for
from .sql import SqlStore

__all__ = [
    "CaseFilter",
    "FeedbackInput",
    "FeedbackRow",
    "LabelledExample",
    "QueueStat",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]


class Store(SqlStore, CaseSql):
    """Decisions, feedback, labelled data (``SqlStore``) and review cases (``CaseSql``)."""


def open_store(
    url: str, *, password_file: str | None = None, migrate: bool = True, executor_threads: int = 4
) -> Store:
    """Open (and by default create or check the tables of) the store at ``url``.

    Raises StoreUnavailable when it cannot be reached now and ValueError for a bad URL.
    """
    password = Path(password_file).read_text().strip() if password_file else None
    store = Store(dialect_for(url, password=password), executor_threads=executor_threads)
    if migrate:
        try:
            store.migrate()
        except Exception:
            store.close()
            raise
    return store
