"""The reviewer console's handlers: sign in with a reviewer key (a signed, HttpOnly,
SameSite=Strict session cookie), the queue, one case, and the actions as plain HTML
forms (each with a CSRF token), answered by a redirect (POST/redirect/GET)."""

from __future__ import annotations

from urllib.parse import quote

from ..auth import COOKIE, Reviewer, cookie_value
from ..console import assets, render
from ..store import StoreError
from . import parse
from .api import Services, run_action
from .common import (
    HttpError,
    Receive,
    Scope,
    Send,
    form,
    query,
    read_body,
    redirect,
    send_bytes,
    send_html,
)

MAX_FORM_BYTES = 256 * 1024
STATIC = {
    "console.css": (assets.CSS.encode(), b"text/css; charset=utf-8"),
    "console.js": (assets.JS.encode(), b"text/javascript; charset=utf-8"),
}


def _cookie(scope: Scope, value: str, max_age: int) -> tuple[bytes, bytes]:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    attrs = f"Path=/review; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    return (b"set-cookie", f"{COOKIE}={value}; {attrs}".encode())


async def handle(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    if path.startswith("/review/static/"):
        item = STATIC.get(path.rsplit("/", 1)[1])
        if item is None or method != "GET":
            await send_html(
                send, 404, render.layout("Not found", render.Safe("<h1>Not found</h1>"))
            )
            return
        await send_bytes(send, 200, *item)
        return
    if path in ("/review", "/review/"):
        await redirect(send, "/review/queue")
        return
    if path == "/review/login":
        await _login(svc, scope, receive, send)
        return
    session = cookie_value(scope["headers"])
    who = svc.auth.from_session(session)
    if who is None or session is None:
        await redirect(send, "/review/login")
        return
    csrf = svc.auth.csrf(session)
    if method == "POST":
        data = form(await read_body(scope, receive, MAX_FORM_BYTES))
        if not svc.auth.check_csrf(session, data.pop("csrf", "")):
            await send_html(
                send,
                403,
                render.layout(
                    "Forbidden",
                    render.Safe("<h1>Forbidden</h1><p>Stale form: reload the page.</p>"),
                ),
            )
            return
        if path == "/review/logout":
            await redirect(send, "/review/login", [_cookie(scope, "", 0)])
            return
        parts = path.split("/")  # ['', 'review', 'cases', id, verb]
        if len(parts) == 5 and parts[2] == "cases":
            await _act(svc, who, csrf, parts[3], parts[4], data, send)
            return
    elif method == "GET":
        if path == "/review/queue":
            await _queue(svc, who, csrf, scope, send)
            return
        parts = path.split("/")
        if len(parts) == 4 and parts[2] == "cases":
            await _case(
                svc, who, csrf, parts[3], send, flash=render.FLASH.get(query(scope).get("done", ""))
            )
            return
    await send_html(send, 404, render.not_found_page(who.name, csrf))


async def _login(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "GET":
        await send_html(send, 200, render.login_page())
        return
    if scope["method"] != "POST":
        await send_html(send, 405, render.login_page())
        return
    data = form(await read_body(scope, receive, 8192))
    who = svc.auth.by_key(data.get("key", "").strip())
    if who is None:
        await send_html(send, 401, render.login_page("That key is not a reviewer key."))
        return
    value = svc.auth.session(who)
    await redirect(send, "/review/queue", [_cookie(scope, value, int(svc.auth.ttl_s))])


def _queues_of(svc: Services, who: Reviewer) -> list[str]:
    known = set(svc.review.s.queues) if svc.review else set()
    if who.queues is not None:
        known = (known | who.queues) & who.queues
    return sorted(known)


async def _queue(svc: Services, who: Reviewer, csrf: str, scope: Scope, send: Send) -> None:
    rs = svc.review
    if rs is None:
        raise HttpError(404, "the review queue is not enabled")
    q = query(scope)
    selected = q.get("queue") or None
    state = q.get("state", "unresolved")
    try:
        wanted = [parse.queue_name(selected)] if selected else None
        f = parse.case_filter({"state": state, "limit": "200"}, who.visible(wanted))
    except HttpError as exc:
        await send_html(
            send,
            400,
            render.layout(
                "Bad filter", render.h("<p>{m}</p>", m=exc.message), reviewer=who.name, csrf=csrf
            ),
        )
        return
    try:
        cases = await rs.list_cases(f)
        stats = await rs.queue_stats(who.queues)
    except StoreError as exc:
        await send_html(
            send,
            503,
            render.layout(
                "Store unavailable",
                render.h("<h1>The store is unavailable</h1><p>{m}</p>", m=str(exc)),
                reviewer=who.name,
                csrf=csrf,
            ),
        )
        return
    page = render.queue_page(
        cases,
        stats,
        now=svc.clock(),
        reviewer=who.name,
        csrf=csrf,
        queues=_queues_of(svc, who),
        selected_queue=selected,
        state=f.state,
        flash=render.FLASH.get(q.get("done", "")),
    )
    await send_html(send, 200, page)


async def _case(
    svc: Services,
    who: Reviewer,
    csrf: str,
    raw_id: str,
    send: Send,
    *,
    flash: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> None:
    rs = svc.review
    case = None
    if rs is not None:
        try:
            cid = parse.case_id(raw_id)
            case = await rs.get(cid, who.queues)
        except HttpError:
            case = None
    if case is None or rs is None:
        await send_html(send, 404, render.not_found_page(who.name, csrf))
        return
    events = await rs.events(case.id)
    queues = [q for q in sorted(rs.s.queues) if q != case.queue]
    cfg = rs.queue_config(case.queue)
    page = render.case_page(
        case,
        events,
        now=svc.clock(),
        reviewer=who.name,
        csrf=csrf,
        escalate_to=queues,
        default_escalation=cfg.escalate_to,
        flash=flash,
        error=error,
    )
    await send_html(send, status, page)


async def _act(
    svc: Services,
    who: Reviewer,
    csrf: str,
    raw_id: str,
    verb: str,
    data: dict[str, str],
    send: Send,
) -> None:
    rs = svc.review
    if rs is None:
        await send_html(send, 404, render.not_found_page(who.name, csrf))
        return
    fields = {k: v for k, v in data.items() if v != ""}
    try:
        cid = parse.case_id(raw_id)
        await run_action(svc, rs, who, cid, verb, fields)
    except HttpError as exc:
        if exc.status == 404:
            await send_html(send, 404, render.not_found_page(who.name, csrf))
            return
        await _case(svc, who, csrf, raw_id, send, error=exc.message, status=exc.status)
        return
    except StoreError as exc:
        await _case(
            svc, who, csrf, raw_id, send, error=f"the store is unavailable: {exc}", status=503
        )
        return
    done = {
        "claim": "claimed",
        "release": "released",
        "resolve": "resolved",
        "escalate": "escalated",
    }[verb]
    if verb in ("resolve", "escalate"):
        await redirect(send, f"/review/queue?done={quote(done)}")
    else:
        await redirect(send, f"/review/cases/{cid}?done={quote(done)}")
