"""The reviewer console in a real headless browser (Debian's chromium driven by
Playwright): sign in with a reviewer key, work a case with the keyboard only, see an
XSS attempt in the conversation rendered as text, escalate; screenshots are saved
under build/test-artifacts/. Also: CSRF and session tampering over plain HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from slmfleet.telemetry.review import CaseInput

from .telemetry_support import KEYS, Served, make_telemetry, sqlite_url

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def file(served: Served, queue: str, text: str, answer: str = "refund") -> str:
    """File a case as the human tier does (synchronously: Playwright's sync API runs an
    event loop in this thread)."""
    rs = served.tel.review
    case = rs.build_case(
        CaseInput(
            request_id="req-console",
            policy="support",
            queue=queue,
            conversation=[
                {"role": "system", "content": "You are a support agent."},
                {"role": "user", "content": text},
            ],
            answers=[
                {
                    "tier": "small",
                    "target": "shop/billing",
                    "answer": answer,
                    "confidence": 0.41,
                    "reasons": ["label_threshold:refund"],
                }
            ],
            escalations=["small:label_threshold:refund", "large:error"],
        )
    )
    return served.tel.store.file_case(case).id


@pytest.fixture
def served(tmp_path):
    with Served(make_telemetry(sqlite_url(tmp_path))) as s:
        yield s


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is missing (make system-deps installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_a_reviewer_works_a_case_with_the_keyboard(served, browser):
    xss_case = file(served, "tier2", f"Refund please {XSS}", answer=f"maybe {XSS}")
    file(served, "senior", "only bob and root see this")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(f"{served.url}/review")
    assert page.url.endswith("/review/login")
    page.fill("#key", "not-a-reviewer-key")
    page.keyboard.press("Enter")
    assert "not a reviewer key" in page.inner_text(".error")
    page.fill("#key", KEYS["alice"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/review/queue")

    rows = page.locator("table.cases tbody tr[data-row]")
    assert rows.count() == 1  # the senior queue is not alice's
    assert "Refund please <script>" in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

    page.keyboard.press("j")  # first row
    page.keyboard.press("Enter")  # open it
    page.wait_for_url(f"**/review/cases/{xss_case}")
    text = page.inner_text("section.conversation")
    assert XSS in text  # shown as text ...
    assert page.evaluate("window.__xss") is None  # ... never run
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    assert XSS in page.inner_text("section.answers")

    page.keyboard.press("c")  # claim
    page.wait_for_url("**?done=claimed")
    assert "Case claimed" in page.inner_text(".flash")
    page.keyboard.press("a")  # focus the answer, prefilled with the model's answer
    assert page.evaluate("document.activeElement.id") == "answer"
    page.keyboard.press("Control+a")
    page.keyboard.type("Your refund was issued today.")
    page.keyboard.press("Escape")
    page.keyboard.press("l")
    page.keyboard.type("refund")
    page.screenshot(path=str(ARTIFACTS / "console-case.png"), full_page=True)
    page.keyboard.press("Control+Enter")  # submit the resolve form
    page.wait_for_url("**/review/queue?done=resolved")
    assert "Case resolved" in page.inner_text(".flash")

    case = served.tel.store.get_case(xss_case)
    assert (case.status, case.resolved_by) == ("resolved", "alice")
    assert (case.answer, case.label) == ("Your refund was issued today.", "refund")
    assert page.evaluate("window.__xss") is None and errors == []
    assert (ARTIFACTS / "console-case.png").stat().st_size > 10_000


def test_escalate_from_the_console(served, browser):
    cid = file(served, "tier2", "I want to sue you")
    page = browser.new_page()
    page.goto(f"{served.url}/review/login")
    page.fill("#key", KEYS["bob"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/review/queue")
    page.goto(f"{served.url}/review/cases/{cid}")
    page.click("#claim")
    page.wait_for_url("**?done=claimed")
    assert page.input_value("#escalate-queue") == "senior"  # the queue's escalateTo
    page.fill("form.escalate input[name=note]", "legal")
    page.click("#escalate")
    page.wait_for_url("**/review/queue?done=escalated")
    case = served.tel.store.get_case(cid)
    assert (case.queue, case.status, case.claimed_by) == ("senior", "open", None)
    page.goto(f"{served.url}/review/queue?queue=senior")
    assert page.locator("table.cases tbody tr[data-row]").count() == 1


def test_forms_need_the_csrf_token_and_an_honest_session(served):
    cid = file(served, "tier2", "hello")
    with httpx.Client(base_url=served.url) as c:
        r = c.post("/review/login", data={"key": KEYS["alice"]})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = c.get(f"/review/cases/{cid}")
        assert page.status_code == 200
        assert "default-src 'none'" in page.headers["content-security-policy"]
        r = c.post(f"/review/cases/{cid}/claim", data={})  # no token: a forged form
        assert r.status_code == 403
        r = c.post(f"/review/cases/{cid}/claim", data={"csrf": "0" * 32})
        assert r.status_code == 403
        assert served.tel.store.get_case(cid).status == "open"
        session = c.cookies["slmfleet_review"]
        forged = session[:-4] + ("AAAA" if not session.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=served.url, cookies={"slmfleet_review": forged}) as c:
        r = c.get("/review/queue")
        assert r.status_code == 303 and r.headers["location"] == "/review/login"
    with httpx.Client(base_url=served.url) as c:
        r = c.get("/review/queue")
        assert r.status_code == 303 and r.headers["location"] == "/review/login"
