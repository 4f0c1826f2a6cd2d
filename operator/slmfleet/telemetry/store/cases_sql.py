"""Review cases in the decision store: file, read, list, change under a row lock."""

from __future__ import annotations

from typing import Any

import orjson

from ..review.cases import Action, Case, Change, Refusal, decide
from .base import CaseFilter, QueueStat

_COLS = (
    "id, queue, policy, request_id, status, created_at, sla_due_at, sla_breached, reason, "
    "payload, claimed_by, lease_until, resolved_by, resolved_at, answer, label, note, "
    "webhook_state, webhook_attempts, webhook_next_at"
)
_N = len(_COLS.split(","))

#: The SQL fragment of each listing state; ``?`` is the current time.
_STATE_SQL = {
    "open": ("(status = 'open' OR (status = 'claimed' AND lease_until < ?))", True),
    "claimed": ("(status = 'claimed' AND lease_until >= ?)", True),
    "resolved": ("status = 'resolved'", False),
    "unresolved": ("status <> 'resolved'", False),
    "any": ("1 = 1", False),
}

MAX_PAGE = 200


def _case(row: Any) -> Case:
    from .sql import load_json

    payload = load_json(row[9]) or {}
    return Case(
        id=row[0],
        queue=row[1],
        policy=row[2],
        request_id=row[3],
        status=row[4],
        created_at=float(row[5]),
        sla_due_at=float(row[6]),
        sla_breached=bool(row[7]),
        reason=row[8],
        escalations=tuple(payload.get("escalations", ())),
        conversation=tuple(payload.get("conversation", ())),
        answers=tuple(payload.get("answers", ())),
        claimed_by=row[10],
        lease_until=row[11],
        resolved_by=row[12],
        resolved_at=row[13],
        answer=row[14],
        label=row[15],
        note=row[16],
        webhook_state=row[17],
        webhook_attempts=int(row[18]),
        webhook_next_at=row[19],
    )


def _payload(c: Case) -> str:
    return orjson.dumps(
        {
            "escalations": list(c.escalations),
            "conversation": list(c.conversation),
            "answers": list(c.answers),
        }
    ).decode()


def _values(c: Case) -> tuple[Any, ...]:
    return (
        c.id,
        c.queue,
        c.policy,
        c.request_id,
        c.status,
        c.created_at,
        c.sla_due_at,
        1 if c.sla_breached else 0,
        c.reason,
        _payload(c),
        c.claimed_by,
        c.lease_until,
        c.resolved_by,
        c.resolved_at,
        c.answer,
        c.label,
        c.note,
        c.webhook_state,
        c.webhook_attempts,
        c.webhook_next_at,
    )


_INSERT = (
    f"INSERT INTO cases ({_COLS}) "
    f"VALUES ({', '.join(['?'] * 9)}, {{J}}, {', '.join(['?'] * (_N - 10))}) "
    "ON CONFLICT (id) DO NOTHING"
)
_UPDATE = (
    "UPDATE cases SET queue = ?, status = ?, sla_due_at = ?, sla_breached = ?, payload = {J}, "
    "claimed_by = ?, lease_until = ?, resolved_by = ?, resolved_at = ?, answer = ?, label = ?, "
    "note = ?, webhook_state = ?, webhook_attempts = ?, webhook_next_at = ? WHERE id = ?"
)
_EVENT = "INSERT INTO case_events (case_id, at, actor, action, detail) VALUES (?, ?, ?, ?, {J})"


class CaseSql:
    """Mixed into ``SqlStore`` (uses its ``d`` and ``_call``)."""

    d: Any
    _call: Any

    def file_case(self, case: Case) -> Case:
        """Insert the case and commit (synchronous=FULL / PostgreSQL commit): when this
        returns, the case survives a crash."""

        def run(conn: Any) -> None:
            with self.d.transaction(conn):
                if conn.execute(self.d.q(_INSERT), _values(case)).rowcount != 1:
                    return  # a retry of an insert that had committed: done already
                conn.execute(
                    self.d.q(_EVENT),
                    (
                        case.id,
                        case.created_at,
                        "router",
                        "file",
                        orjson.dumps({"queue": case.queue}).decode(),
                    ),
                )

        self._call(run)
        return case

    def get_case(self, case_id: str) -> Case | None:
        row = self._call(
            lambda c: c.execute(
                self.d.q(f"SELECT {_COLS} FROM cases WHERE id = ?"), (case_id,)
            ).fetchone()
        )
        return None if row is None else _case(row)

    def case_ids(self) -> set[str]:
        return self._call(lambda c: {r[0] for r in c.execute("SELECT id FROM cases").fetchall()})

    def case_events(self, case_id: str) -> list[dict[str, Any]]:
        from .sql import load_json

        rows = self._call(
            lambda c: c.execute(
                self.d.q(
                    "SELECT at, actor, action, detail FROM case_events "
                    "WHERE case_id = ? ORDER BY id"
                ),
                (case_id,),
            ).fetchall()
        )
        return [
            {"at": r[0], "actor": r[1], "action": r[2], **(load_json(r[3]) or {})} for r in rows
        ]

    def list_cases(self, f: CaseFilter, now: float) -> list[Case]:
        where: list[str] = []
        params: list[Any] = []
        if f.queues is not None:
            if not f.queues:
                return []
            where.append(f"queue IN ({', '.join(['?'] * len(f.queues))})")
            params.extend(f.queues)
        fragment, needs_now = _STATE_SQL[f.state]
        where.append(fragment)
        if needs_now:
            params.append(now)
        for column, value in (
            ("policy", f.policy),
            ("request_id", f.request_id),
            ("claimed_by", f.claimed_by),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.created_after is not None:
            where.append("created_at > ?")
            params.append(f.created_after)
        if f.created_before is not None:
            where.append("created_at < ?")
            params.append(f.created_before)
        if f.after is not None:
            where.append("(created_at > ? OR (created_at = ? AND id > ?))")
            params.extend((f.after[0], f.after[0], f.after[1]))
        params.append(max(1, min(f.limit, MAX_PAGE)))
        sql = (
            f"SELECT {_COLS} FROM cases WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ?"
        )
        rows = self._call(lambda c: c.execute(self.d.q(sql), params).fetchall())
        return [_case(r) for r in rows]

    def apply(
        self,
        case_id: str,
        action: Action,
        now: float,
        *,
        queues: frozenset[str] | None = None,
        webhook_queues: frozenset[str] = frozenset(),
    ) -> Change | Refusal | None:
        """Lock the case, ``decide``, write the change and its audit event, commit.

        None when there is no such case or it is in a queue outside ``queues``.
        A resolution of a queue in ``webhook_queues`` is marked for webhook delivery
        in the same transaction (delivered later, at least once).
        """

        def run(conn: Any) -> Change | Refusal | None:
            with self.d.transaction(conn):
                row = conn.execute(
                    self.d.q(f"SELECT {_COLS} FROM cases WHERE id = ?{self.d.for_update}"),
                    (case_id,),
                ).fetchone()
                if row is None:
                    return None
                case = _case(row)
                if queues is not None and case.queue not in queues:
                    return None
                result = decide(case, action, now)
                if isinstance(result, Refusal) or not result.changed:
                    return result
                new = result.case
                if result.resolved_now and new.queue in webhook_queues:
                    new = _with_webhook(new, now)
                    result = Change(
                        new, True, result.event, result.resolved_now, result.breached_now
                    )
                conn.execute(
                    self.d.q(_UPDATE),
                    (
                        new.queue,
                        new.status,
                        new.sla_due_at,
                        1 if new.sla_breached else 0,
                        _payload(new),
                        new.claimed_by,
                        new.lease_until,
                        new.resolved_by,
                        new.resolved_at,
                        new.answer,
                        new.label,
                        new.note,
                        new.webhook_state,
                        new.webhook_attempts,
                        new.webhook_next_at,
                        new.id,
                    ),
                )
                ev = dict(result.event)
                conn.execute(
                    self.d.q(_EVENT),
                    (
                        new.id,
                        ev.pop("at", now),
                        ev.pop("actor", "?"),
                        ev.pop("action", "?"),
                        orjson.dumps(ev).decode(),
                    ),
                )
                return result

        return self._call(run)

    def queue_stats(self, now: float) -> list[QueueStat]:
        rows = self._call(
            lambda c: c.execute(
                self.d.q(
                    "SELECT queue, "
                    "SUM(CASE WHEN status = 'claimed' AND lease_until >= ? THEN 1 ELSE 0 END), "
                    "COUNT(*), MIN(created_at), SUM(sla_breached) "
                    "FROM cases WHERE status <> 'resolved' GROUP BY queue ORDER BY queue"
                ),
                (now,),
            ).fetchall()
        )
        return [
            QueueStat(r[0], int(r[2]) - int(r[1] or 0), int(r[1] or 0), r[3], int(r[4] or 0))
            for r in rows
        ]

    def mark_breaches(self, now: float) -> dict[str, int]:
        """Flag unresolved cases past their SLA; returns newly flagged per queue. The
        conditional UPDATE flags each case once, whichever replica runs it first."""

        def run(conn: Any) -> list[Any]:
            with self.d.transaction(conn):
                return conn.execute(
                    self.d.q(
                        "UPDATE cases SET sla_breached = 1 WHERE status <> 'resolved' "
                        "AND sla_breached = 0 AND sla_due_at < ? RETURNING queue"
                    ),
                    (now,),
                ).fetchall()

        out: dict[str, int] = {}
        for (queue,) in self._call(run):
            out[queue] = out.get(queue, 0) + 1
        return out

    def due_webhooks(self, now: float, *, limit: int = 20, lease_s: float = 30.0) -> list[Case]:
        """Take up to ``limit`` resolutions due for webhook delivery, moving their next
        attempt ``lease_s`` ahead so another replica does not deliver them meanwhile."""

        def run(conn: Any) -> list[Any]:
            with self.d.transaction(conn):
                return conn.execute(
                    self.d.q(
                        f"UPDATE cases SET webhook_next_at = ? WHERE webhook_state = 'pending' "
                        f"AND webhook_next_at <= ? AND id IN (SELECT id FROM cases WHERE "
                        f"webhook_state = 'pending' AND webhook_next_at <= ? "
                        f"ORDER BY webhook_next_at LIMIT ?) RETURNING {_COLS}"
                    ),
                    (now + lease_s, now, now, limit),
                ).fetchall()

        return [_case(r) for r in self._call(run)]

    def webhook_done(self, case_id: str, *, ok: bool, next_at: float | None) -> None:
        """Record a delivery attempt: delivered, retry at ``next_at``, or given up (None)."""
        state = "delivered" if ok else ("pending" if next_at is not None else "failed")

        def run(conn: Any) -> None:
            with self.d.transaction(conn):
                conn.execute(
                    self.d.q(
                        "UPDATE cases SET webhook_state = ?, "
                        "webhook_attempts = webhook_attempts + 1, webhook_next_at = ? WHERE id = ?"
                    ),
                    (state, next_at, case_id),
                )

        self._call(run)


def _with_webhook(c: Case, now: float) -> Case:
    from dataclasses import replace

    return replace(c, webhook_state="pending", webhook_attempts=0, webhook_next_at=now)
