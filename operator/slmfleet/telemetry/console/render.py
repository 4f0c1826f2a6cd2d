"""The reviewer console's HTML: pure functions from data to a page.

Every value goes through ``h`` (or ``esc``), which HTML-escapes it unless it is
``Safe`` (markup this module built). Templates are constants; conversation text,
model answers, names and notes are data, so a ``<script>`` in a prompt is shown as
text. The page loads only ``/review/static/*`` (the CSP allows nothing else).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..review.cases import Case


class Safe(str):
    """Markup built here: inserted as is."""


def esc(value: Any) -> str:
    if isinstance(value, Safe):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def h(template: str, **values: Any) -> Safe:
    """``template`` with every value escaped (``Safe`` values inserted as they are)."""
    return Safe(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Safe]) -> Safe:
    return Safe("".join(parts))


FLASH = {
    "claimed": "Case claimed: it is yours until the lease runs out.",
    "released": "Case released: it is back in the queue.",
    "resolved": "Case resolved.",
    "escalated": "Case escalated.",
}


PAST = {
    "file": "filed it",
    "claim": "claimed it",
    "renew": "renewed the claim",
    "release": "released it",
    "resolve": "resolved it",
    "escalate": "escalated it",
}


def age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def stamp(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def layout(
    title: str,
    body: Safe,
    *,
    reviewer: str | None = None,
    csrf: str = "",
    flash: str | None = None,
    error: str | None = None,
) -> str:
    top = Safe("")
    if reviewer is not None:
        top = h(
            '<nav><a href="/review/queue" accesskey="g">Queue</a></nav>'
            '<span class="who">{who}</span>'
            '<form method="post" action="/review/logout" class="inline">'
            '<input type="hidden" name="csrf" value="{csrf}">'
            '<button type="submit">Sign out</button></form>',
            who=reviewer,
            csrf=csrf,
        )
    notes = Safe("")
    if flash:
        notes = h('<p class="flash" role="status">{m}</p>', m=flash)
    if error:
        notes = h('<p class="error" role="alert">{m}</p>', m=error)
    return h(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} - slmfleet review</title>"
        '<link rel="stylesheet" href="/review/static/console.css">'
        '<script src="/review/static/console.js" defer></script></head>'
        '<body><header><a class="brand" href="/review/queue">slmfleet review</a>{top}</header>'
        "<main>{notes}{body}</main>"
        "<footer>Keys: <kbd>j</kbd>/<kbd>k</kbd> move, <kbd>Enter</kbd> open, <kbd>c</kbd> claim, "
        "<kbd>a</kbd> answer, <kbd>l</kbd> label, <kbd>e</kbd> escalate, <kbd>u</kbd> release, "
        "<kbd>Ctrl</kbd>+<kbd>Enter</kbd> submit, <kbd>/</kbd> filter, <kbd>g</kbd> queue</footer>"
        "</body></html>",
        title=title,
        top=top,
        notes=notes,
        body=body,
    )


def login_page(error: str | None = None) -> str:
    body = Safe(
        '<h1>Sign in</h1><form method="post" action="/review/login" class="login">'
        '<label for="key">Reviewer key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" '
        "required autofocus>"
        '<button type="submit">Sign in</button></form>'
        "<p>Reviewer keys are not API keys: ask whoever runs slmfleet for yours.</p>"
    )
    return layout("Sign in", body, error=error)


def _excerpt(case: Case, n: int = 140) -> str:
    for msg in reversed(case.conversation):
        if msg.get("role") == "user":
            text = str(msg.get("content", ""))
            return text if len(text) <= n else text[:n] + "..."
    return ""


def queue_page(
    cases: Sequence[Case],
    stats: Sequence[dict[str, Any]],
    *,
    now: float,
    reviewer: str,
    csrf: str,
    queues: Sequence[str],
    selected_queue: str | None,
    state: str,
    flash: str | None = None,
) -> str:
    options = join(
        h(
            '<option value="{q}"{sel}>{q}</option>',
            q=q,
            sel=Safe(" selected" if q == selected_queue else ""),
        )
        for q in queues
    )
    states = join(
        h('<option value="{s}"{sel}>{s}</option>', s=s, sel=Safe(" selected" if s == state else ""))
        for s in ("unresolved", "open", "claimed", "resolved", "any")
    )
    filters = h(
        '<form method="get" action="/review/queue" class="filters">'
        '<label for="filter-queue">Queue</label><select id="filter-queue" name="queue">'
        '<option value="">all mine</option>{options}</select>'
        '<label for="filter-state">State</label><select id="filter-state" name="state">'
        "{states}</select>"
        '<button type="submit">Show</button></form>',
        options=options,
        states=states,
    )
    stat_rows = join(
        h(
            '<tr><td>{queue}</td><td class="num">{open}</td><td class="num">{claimed}</td>'
            '<td class="num">{oldest}</td><td class="num">{sla}</td>'
            '<td class="num{warn}">{breached}</td></tr>',
            queue=s["queue"],
            open=s["open"],
            claimed=s["claimed"],
            oldest=age(s["oldest_age_s"]) if s["open"] + s["claimed"] else "-",
            sla=age(s["sla_seconds"]),
            breached=s["breached"],
            warn=Safe(" warn" if s["breached"] else ""),
        )
        for s in stats
    )
    stats_table = h(
        '<table class="stats"><caption>Queues</caption><thead><tr><th>queue</th>'
        '<th class="num">open</th><th class="num">claimed</th><th class="num">oldest</th>'
        '<th class="num">SLA</th><th class="num">breached</th></tr></thead>'
        "<tbody>{rows}</tbody></table>",
        rows=stat_rows,
    )
    rows = join(
        h(
            '<tr data-row class="{cls}"><td><a href="/review/cases/{id}">{short}</a></td>'
            "<td>{queue}</td><td>{policy}</td><td>{state}</td><td>{who}</td>"
            '<td class="num">{age}</td><td>{reason}</td><td class="excerpt">{excerpt}</td></tr>',
            cls=(
                "breached"
                if (c.sla_breached or now > c.sla_due_at) and c.status != "resolved"
                else ""
            ),
            id=c.id,
            short=c.id[:8],
            queue=c.queue,
            policy=c.policy,
            state=c.state(now),
            who=c.claimed_by if c.state(now) == "claimed" else (c.resolved_by or ""),
            age=age(now - c.created_at),
            reason=c.reason,
            excerpt=_excerpt(c),
        )
        for c in cases
    )
    if not cases:
        rows = Safe('<tr><td colspan="8" class="empty">No cases here.</td></tr>')
    table = h(
        '<table class="cases"><caption>Cases</caption><thead><tr><th>case</th><th>queue</th>'
        "<th>policy</th><th>state</th><th>reviewer</th><th>age</th><th>why</th>"
        "<th>request</th></tr></thead><tbody>{rows}</tbody></table>",
        rows=rows,
    )
    body = join([Safe("<h1>Review queue</h1>"), filters, stats_table, table])
    return layout("Queue", body, reviewer=reviewer, csrf=csrf, flash=flash)


def _messages(conversation: Iterable[dict[str, Any]]) -> Safe:
    return join(
        h(
            '<div class="msg {role}"><div class="role">{role}</div><pre>{content}</pre></div>',
            role=str(m.get("role", "?"))[:32],
            content=m.get("content", ""),
        )
        for m in conversation
    )


def _answers(answers: Iterable[dict[str, Any]]) -> Safe:
    out = [
        h(
            '<div class="answer"><div class="meta">tier <b>{tier}</b> ({target}), '
            "confidence {conf}, rejected for: {reasons}</div><pre>{text}</pre></div>",
            tier=a.get("tier", "?"),
            target=a.get("target", "?"),
            conf="-" if a.get("confidence") is None else f"{float(a['confidence']):.3f}",
            reasons=", ".join(map(str, a.get("reasons") or [])) or "-",
            text=a.get("answer", ""),
        )
        for a in answers
    ]
    return join(out) if out else Safe('<p class="empty">No model answered before review.</p>')


def case_page(
    case: Case,
    events: Sequence[dict[str, Any]],
    *,
    now: float,
    reviewer: str,
    csrf: str,
    escalate_to: Sequence[str],
    default_escalation: str | None,
    flash: str | None = None,
    error: str | None = None,
) -> str:
    state = case.state(now)
    mine = case.status == "claimed" and case.claimed_by == reviewer
    meta = h(
        '<dl class="meta"><dt>queue</dt><dd>{queue}</dd><dt>policy</dt><dd>{policy}</dd>'
        "<dt>request</dt><dd><code>{rid}</code></dd><dt>state</dt><dd>{state}{who}</dd>"
        '<dt>filed</dt><dd>{filed} ({age} ago)</dd><dt>SLA due</dt><dd class="{sla_cls}">{due}</dd>'
        "<dt>why</dt><dd>{reason}</dd><dt>escalations</dt><dd>{escalations}</dd></dl>",
        queue=case.queue,
        policy=case.policy,
        rid=case.request_id,
        state=state,
        who=f" by {case.claimed_by}" if state == "claimed" else "",
        filed=stamp(case.created_at),
        age=age(now - case.created_at),
        due=stamp(case.sla_due_at),
        sla_cls="warn" if case.status != "resolved" and now > case.sla_due_at else "",
        reason=case.reason or "-",
        escalations=", ".join(case.escalations) or "-",
    )
    hidden = h('<input type="hidden" name="csrf" value="{csrf}">', csrf=csrf)
    base = f"/review/cases/{case.id}"
    actions: list[Safe] = []
    if case.status == "resolved":
        actions.append(
            h(
                '<section class="resolution"><h2>Resolution</h2><p>by {by} at {at}</p>'
                "<p>label: <b>{label}</b></p><pre>{answer}</pre><p>{note}</p></section>",
                by=case.resolved_by,
                at=stamp(case.resolved_at),
                label=case.label or "-",
                answer=case.answer or "",
                note=case.note or "",
            )
        )
    elif not mine:
        actions.append(
            h(
                '<form method="post" action="{base}/claim">{hidden}'
                '<button id="claim" type="submit" accesskey="c">Claim</button></form>',
                base=base,
                hidden=hidden,
            )
        )
    else:
        last = case.answers[-1].get("answer", "") if case.answers else ""
        options = join(
            h(
                '<option value="{q}"{sel}>{q}</option>',
                q=q,
                sel=Safe(" selected" if q == default_escalation else ""),
            )
            for q in escalate_to
        )
        actions.append(
            h(
                '<form method="post" action="{base}/resolve" class="resolve">{hidden}'
                '<label for="answer">Answer sent to the caller</label>'
                '<textarea id="answer" name="answer" rows="8">{last}</textarea>'
                '<label for="label">Label</label><input id="label" name="label" maxlength="256">'
                '<label for="note">Note (not sent)</label>'
                '<input id="note" name="note" maxlength="4096">'
                '<button id="resolve" type="submit">Resolve</button></form>'
                '<form method="post" action="{base}/release" class="inline">{hidden}'
                '<button id="release" type="submit">Release</button></form>',
                base=base,
                hidden=hidden,
                last=last,
            )
        )
        if escalate_to:
            actions.append(
                h(
                    '<form method="post" action="{base}/escalate" class="escalate">{hidden}'
                    '<label for="escalate-queue">Escalate to</label>'
                    '<select id="escalate-queue" name="queue">{options}</select>'
                    '<input name="note" placeholder="why" maxlength="4096">'
                    '<button id="escalate" type="submit">Escalate</button></form>',
                    base=base,
                    hidden=hidden,
                    options=options,
                )
            )
    history = join(
        h(
            "<li>{at}: {actor} {action}{detail}</li>",
            at=stamp(e.get("at")),
            actor=e.get("actor"),
            action=PAST.get(str(e.get("action")), e.get("action")),
            detail=(f" ({e['to']})" if e.get("to") else "")
            + (f" [{e['label']}]" if e.get("label") else ""),
        )
        for e in events
    )
    body = join(
        [
            h("<h1>Case {short}</h1>", short=case.id[:8]),
            meta,
            Safe('<section class="conversation"><h2>Conversation</h2>'),
            _messages(case.conversation),
            Safe('</section><section class="answers"><h2>Model answers</h2>'),
            _answers(case.answers),
            Safe('</section><section class="actions"><h2>Decide</h2>'),
            *actions,
            Safe('</section><section class="history"><h2>History</h2><ol>'),
            history,
            Safe("</ol></section>"),
        ]
    )
    return layout(
        f"Case {case.id[:8]}", body, reviewer=reviewer, csrf=csrf, flash=flash, error=error
    )


def not_found_page(reviewer: str, csrf: str) -> str:
    return layout(
        "Not found",
        Safe(
            '<h1>Not found</h1><p>No such case in your queues. <a href="/review/queue">Back</a></p>'
        ),
        reviewer=reviewer,
        csrf=csrf,
    )
