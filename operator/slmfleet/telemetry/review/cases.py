"""Review cases and what reviewers may do to them: pure data and pure decisions.

The store runs every change as: lock the case row, ``decide`` (here), write the
change, commit. Several router replicas and reviewers may act on one case at once; the
row lock serialises them and ``decide`` says what each gets:

- claim: takes the case for ``lease_s``; renews one's own claim; refused while another
  reviewer's lease runs, and on a resolved case;
- release: gives one's claim back (the case is open again);
- resolve: needs the reviewer's claim, even an expired one as long as nobody else has
  claimed the case since (the work is not thrown away); a second resolution is refused
  (``already_resolved``) unless it is the same reviewer sending the same resolution
  again (a retried request: answered as before, nothing changes);
- escalate: moves a claimed case to another queue, open again, with a fresh SLA.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Status = Literal["open", "claimed", "resolved"]


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    queue: str
    policy: str
    request_id: str
    status: Status
    created_at: float
    sla_due_at: float
    reason: str = ""
    """Why the request escalated to review (the last escalation reasons)."""
    escalations: tuple[str, ...] = ()
    conversation: tuple[dict[str, Any], ...] = ()
    """The request's messages: ({role, content}, ...)."""
    answers: tuple[dict[str, Any], ...] = ()
    """The tiers' answers before review: ({tier, target, answer, confidence, reasons})."""
    sla_breached: bool = False
    claimed_by: str | None = None
    lease_until: float | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    answer: str | None = None
    label: str | None = None
    note: str | None = None
    webhook_state: str = "none"
    webhook_attempts: int = 0
    webhook_next_at: float | None = None

    def state(self, now: float) -> Status:
        """The state reviewers see: a claim whose lease ran out is open again."""
        if self.status == "claimed" and (self.lease_until or 0.0) < now:
            return "open"
        return self.status

    def public(self, now: float) -> dict[str, Any]:
        """The case as the review API returns it."""
        return {
            "id": self.id,
            "object": "review.case",
            "queue": self.queue,
            "policy": self.policy,
            "request_id": self.request_id,
            "state": self.state(now),
            "created_at": self.created_at,
            "sla_due_at": self.sla_due_at,
            "sla_breached": self.sla_breached
            or (self.status != "resolved" and now > self.sla_due_at),
            "reason": self.reason,
            "escalations": list(self.escalations),
            "conversation": list(self.conversation),
            "answers": list(self.answers),
            "claimed_by": self.claimed_by if self.state(now) == "claimed" else None,
            "lease_until": self.lease_until if self.state(now) == "claimed" else None,
            "resolution": None
            if self.status != "resolved"
            else {
                "by": self.resolved_by,
                "at": self.resolved_at,
                "answer": self.answer,
                "label": self.label,
                "note": self.note,
            },
        }

    def for_client(self, now: float) -> dict[str, Any]:
        """What the caller who got a case id may poll: state and the final answer, not
        who reviewed it or their notes."""
        done = self.status == "resolved"
        return {
            "id": self.id,
            "object": "review.case",
            "status": "resolved" if done else "pending",
            "created_at": self.created_at,
            "resolved_at": self.resolved_at if done else None,
            "answer": self.answer if done else None,
            "label": self.label if done else None,
        }


@dataclass(frozen=True, slots=True)
class Claim:
    reviewer: str
    lease_s: float


@dataclass(frozen=True, slots=True)
class Release:
    reviewer: str


@dataclass(frozen=True, slots=True)
class Resolve:
    reviewer: str
    answer: str | None = None
    label: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Escalate:
    reviewer: str
    to_queue: str
    sla_s: float
    note: str | None = None


Action = Claim | Release | Resolve | Escalate


@dataclass(frozen=True, slots=True)
class Refusal:
    """The action is refused: HTTP ``status`` with an error ``code`` and message."""

    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Change:
    """The case after the action; ``changed`` False when nothing needs writing (a
    repeated resolution); ``event`` is the audit trail entry."""

    case: Case
    changed: bool = True
    event: dict[str, Any] = field(default_factory=dict)
    resolved_now: bool = False
    breached_now: bool = False


def decide(case: Case, action: Action, now: float) -> Change | Refusal:
    """What ``action`` does to ``case`` at time ``now`` (pure; see the module doc)."""
    state = case.state(now)
    if isinstance(action, Resolve) and case.status == "resolved":
        same = (
            case.resolved_by == action.reviewer
            and case.answer == action.answer
            and case.label == action.label
        )
        if same:
            return Change(case, changed=False)
        return Refusal(
            409, "already_resolved", f"case {case.id} was already resolved by {case.resolved_by}"
        )
    if case.status == "resolved":
        return Refusal(409, "already_resolved", f"case {case.id} is resolved")
    holder = case.claimed_by if case.status == "claimed" else None
    mine = holder == action.reviewer
    if isinstance(action, Claim):
        if state == "claimed" and not mine:
            return Refusal(
                409,
                "claimed",
                f"case {case.id} is claimed by {holder} until {case.lease_until:.0f}",
            )
        new = replace(
            case, status="claimed", claimed_by=action.reviewer, lease_until=now + action.lease_s
        )
        return Change(
            new,
            event=_event(now, action.reviewer, "renew" if mine and state == "claimed" else "claim"),
        )
    if not mine:
        if state == "claimed":
            return Refusal(409, "claimed", f"case {case.id} is claimed by {holder}")
        return Refusal(409, "not_claimed", f"claim case {case.id} first")
    # The reviewer holds the claim (its lease may have run out with nobody taking over).
    if isinstance(action, Release):
        new = replace(case, status="open", claimed_by=None, lease_until=None)
        return Change(new, event=_event(now, action.reviewer, "release"))
    if isinstance(action, Escalate):
        if action.to_queue == case.queue:
            return Refusal(400, "invalid_queue", f"case {case.id} is already in {case.queue}")
        new = replace(
            case,
            status="open",
            queue=action.to_queue,
            claimed_by=None,
            lease_until=None,
            sla_due_at=now + action.sla_s,
            sla_breached=False,
            escalations=(*case.escalations, f"review:{case.queue}->{action.to_queue}"),
            note=action.note or case.note,
        )
        return Change(
            new,
            event=_event(now, action.reviewer, "escalate", to=action.to_queue, note=action.note),
        )
    assert isinstance(action, Resolve)
    breached = not case.sla_breached and now > case.sla_due_at
    new = replace(
        case,
        status="resolved",
        resolved_by=action.reviewer,
        resolved_at=now,
        answer=action.answer,
        label=action.label,
        note=action.note,
        lease_until=None,
        sla_breached=case.sla_breached or breached,
    )
    return Change(
        new,
        event=_event(now, action.reviewer, "resolve", label=action.label),
        resolved_now=True,
        breached_now=breached,
    )


def _event(now: float, actor: str, action: str, **detail: Any) -> dict[str, Any]:
    return {"at": now, "actor": actor, "action": action, **{k: v for k, v in detail.items() if v}}
