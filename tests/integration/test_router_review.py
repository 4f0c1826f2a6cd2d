"""The human tier of the real router on a real store: a request that reaches it files a
case before the caller gets anything, and the caller is answered per the tier's mode
(hold, 202 + poll, wait for a reviewer); a reviewer works the case through the review
API and in the console in a real browser (Debian's chromium, Playwright); the
resolution becomes labelled data joined to the request's decision."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from .telemetry_router import client_for, reviewer, telemetry_router, wait_decision
from .telemetry_support import KEYS, sqlite_url

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(params=["sqlite", "postgres"])
def router(request, triton, tmp_path):
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with telemetry_router(triton.grpc_url, url, tmp_path) as r:
        yield r


def raw_chat(client: openai.OpenAI, model: str, text: str, **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


def resolve(router, case_id: str, answer: str, label: str | None = None, who: str = "alice"):
    with reviewer(router, who) as r:
        assert r.post(f"/v1/review/cases/{case_id}/claim").status_code == 200
        body = {"answer": answer, **({"label": label} if label else {})}
        resp = r.post(f"/v1/review/cases/{case_id}/resolve", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()


def test_hold_files_the_case_before_answering(router):
    client = client_for(router)
    store = router.app.telemetry.store
    raw = raw_chat(client, "review-hold", "my parcel arrived broken, I want a lawyer")
    cid = raw.headers["x-slmfleet-review-case"]
    assert raw.parse().choices[0].message.content == f"held as case {cid}"
    assert raw.headers["x-slmfleet-tier"] == "review"
    assert raw.headers["x-slmfleet-target"] == "human:tier2"
    case = store.get_case(cid)  # committed before the answer: no waiting here
    assert case.queue == "tier2" and case.policy == "review-hold" and case.status == "open"
    assert case.request_id == raw.headers["x-slmfleet-request-id"]
    assert case.conversation == (
        {"role": "user", "content": "my parcel arrived broken, I want a lawyer"},
    )
    assert case.escalations == ("routed:error",) and case.reason == "error"
    rec = wait_decision(store, case.request_id)
    assert rec["review"] == {"queue": "tier2", "case_id": cid} and rec["tier"] == "review"
    assert [a["outcome"] for a in rec["attempts"]] == ["failed", "accepted"]
    with reviewer(router, "alice") as r:  # alice is granted tier2: the case is listed
        listed = r.get("/v1/review/cases", params={"queue": "tier2"}).json()["data"]
        assert cid in [c["id"] for c in listed]


def test_a_split_part_that_reaches_an_async_review_is_held_and_names_its_case(router):
    client = client_for(router)
    store = router.app.telemetry.store
    raw = raw_chat(client, "review-split", "where is my parcel now; I want a lawyer")
    assert raw.http_response.status_code == 200  # the other part answers too: no 202
    cid = raw.headers["x-slmfleet-review-case"]
    assert raw.headers["x-slmfleet-split"] == "2"
    assert raw.headers["x-slmfleet-tier"] == "routed,review"
    assert raw.headers["x-slmfleet-human-review"] == "tier2"
    text = raw.parse().choices[0].message.content
    assert text.endswith(f"\n\nheld as case {cid}") and len(text) > len(cid) + 20
    case = store.get_case(cid)
    rid = raw.headers["x-slmfleet-request-id"]
    assert case.queue == "tier2" and case.request_id == f"{rid}.2"
    assert case.conversation == ({"role": "user", "content": "I want a lawyer"},)
    rec = wait_decision(store, rid)
    assert rec["review"] == {"queue": "tier2", "case_id": cid}
    assert [(a["tier"], a["outcome"]) for a in rec["attempts"]] == [
        ("part1/routed", "accepted"),
        ("part2/routed", "failed"),
        ("part2/review", "accepted"),
    ]
    parts = raw.http_response.json()["slmfleet"]["split"]
    assert [p["review_case"] for p in parts] == [None, cid]


def test_async_answers_202_the_caller_polls_and_gets_the_reviewers_answer(router):
    client = client_for(router)
    store = router.app.telemetry.store
    raw = raw_chat(client, "review-async", "please cancel my order and refund me")
    assert raw.http_response.status_code == 202
    body = raw.http_response.json()
    cid = body["id"]
    assert body == {
        "id": cid,
        "object": "review.case",
        "status": "pending",
        "queue": "tier2",
        "url": f"/v1/cases/{cid}",
    }
    assert raw.headers["location"] == f"/v1/cases/{cid}"
    assert raw.headers["x-slmfleet-review-case"] == cid
    assert client.get(f"/cases/{cid}", cast_to=object)["status"] == "pending"
    resolve(router, cid, "Cancelled; the refund is on its way.", "refund")
    polled = client.get(f"/cases/{cid}", cast_to=object)
    assert polled["status"] == "resolved" and polled["label"] == "refund"
    assert polled["answer"] == "Cancelled; the refund is on its way."
    assert "by" not in polled and "note" not in polled  # never who reviewed it
    rid = raw.headers["x-slmfleet-request-id"]
    assert wait_decision(store, rid)["status"] == 202
    (row,) = [r.as_dict() for r in store.labelled(0.0) if r.case_id == cid]
    assert row["source"] == "review" and row["correct_label"] == "refund"
    assert row["request_id"] == rid and row["tier"] == "review" and row["by"] == "alice"

    # A streamed request cannot be a 202: the holding message names the case.
    chunks = list(
        client.chat.completions.create(
            model="review-async",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed = text.removeprefix("held as case ")
    assert text.startswith("held as case ") and store.get_case(streamed).policy == "review-async"


def test_wait_holds_the_caller_for_the_reviewer_then_times_out_to_202(router):
    client = client_for(router)
    store = router.app.telemetry.store
    got: dict = {}

    def call() -> None:
        got["raw"] = raw_chat(client, "review-wait", "unique question 7f3a for a human")

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 15
    case = None
    while case is None:
        assert time.monotonic() < deadline, "no case was filed"
        with reviewer(router, "bob") as r:
            for c in r.get("/v1/review/cases", params={"queue": "tier2"}).json()["data"]:
                if c["conversation"][0]["content"].endswith("7f3a for a human"):
                    case = c
        time.sleep(0.1)
    assert caller.is_alive()  # still waiting for a reviewer
    resolve(router, case["id"], "A human says: yes.", who="bob")
    caller.join(timeout=10)
    raw = got["raw"]
    assert raw.parse().choices[0].message.content == "A human says: yes."
    assert raw.headers["x-slmfleet-review-case"] == case["id"]
    assert store.get_case(case["id"]).resolved_by == "bob"

    begin = time.monotonic()
    raw = raw_chat(client, "review-wait-1s", "nobody will answer this")
    assert raw.http_response.status_code == 202  # onTimeout: async
    assert 1.0 <= time.monotonic() - begin < 5
    assert store.get_case(raw.http_response.json()["id"]).status == "open"
    # The wait for a reviewer is the tier's upstream time, not latency the router added.
    latency = wait_decision(store, raw.headers["x-slmfleet-request-id"])["latency_ms"]
    assert latency["upstream"] >= 1000 > latency["router"], latency


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


def test_a_reviewer_resolves_a_routed_case_in_the_console(triton, tmp_path, browser):
    with telemetry_router(triton.grpc_url, sqlite_url(tmp_path), tmp_path) as router:
        client = client_for(router)
        raw = raw_chat(client, "review-async", "Where is my order <b>ZX-981</b>?")
        cid = raw.http_response.json()["id"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{router.url}/review")
        page.fill("#key", KEYS["alice"])
        page.keyboard.press("Enter")
        page.wait_for_url("**/review/queue")
        row = page.locator("table.cases tbody tr[data-row]").first
        assert "Where is my order <b>ZX-981</b>?" in row.inner_text()  # as text
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/review/cases/{cid}")
        assert "routed:error" in page.inner_text("main")
        page.keyboard.press("c")
        page.wait_for_url("**?done=claimed")
        page.keyboard.press("a")
        page.keyboard.press("Control+a")
        page.keyboard.type("ZX-981 ships tomorrow.")
        page.keyboard.press("Escape")
        page.keyboard.press("l")
        page.keyboard.type("shipping")
        page.screenshot(path=str(ARTIFACTS / "router-console-case.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        page.wait_for_url("**/review/queue?done=resolved")
        assert errors == [] and page.locator("main b").count() == 0
        polled = client.get(f"/cases/{cid}", cast_to=object)
        assert (polled["status"], polled["answer"], polled["label"]) == (
            "resolved",
            "ZX-981 ships tomorrow.",
            "shipping",
        )
        # The reviewer's key is not a client key, and a client key is no reviewer's.
        r = httpx.get(
            router.url + "/v1/models", headers={"authorization": f"Bearer {KEYS['alice']}"}
        )
        assert r.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=router.url + "/v1", api_key=KEYS["alice"], max_retries=0).get(
                f"/cases/{cid}", cast_to=object
            )
