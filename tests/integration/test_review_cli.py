"""``slmfleet review serve`` and ``slmfleet review export`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from slmfleet.local.procs import stop_group
from slmfleet.telemetry.record import DecisionRecord, to_row
from slmfleet.telemetry.review.cases import Case, Claim, Resolve
from slmfleet.telemetry.store import FeedbackInput, open_store

from .telemetry_support import free_port

pytestmark = pytest.mark.integration

KEY = "reviewer-key-0123456789abcdef"


def cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slmfleet.cli.main", "review", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def test_export_writes_labelled_json_lines(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = open_store(url)
    now = time.time()
    store.write_decisions([to_row(DecisionRecord("r1", now, "support", route="shop/billing"))])
    store.put_feedback(FeedbackInput("r1", rating=1.0, label="refund"), now)
    store.file_case(Case("a" * 32, "tier2", "support", "r1", "open", now, now + 60))
    store.apply("a" * 32, Claim("ann", 60), now)
    store.apply("a" * 32, Resolve("ann", answer="ok", label="refund"), now + 1)
    store.close()
    out = cli("export", "--store", url)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["source"], r["correct_label"], r["route"]) for r in rows] == [
        ("feedback", "refund", "shop/billing"),
        ("review", "refund", "shop/billing"),
    ]
    assert all(r["format"] == "slmfleet.labelled/v1" for r in rows)
    assert cli("export", "--store", url, "--since", str(now + 2)).stdout == ""
    assert cli("export").returncode == 2  # no store: a clear error
    assert "unsupported" in cli("export", "--store", "mysql://x").stderr


def test_serve_answers_reviewers(tmp_path):
    reviewers = tmp_path / "reviewers.yaml"
    reviewers.write_text(f"- {{name: ann, key: {KEY}, queues: ['*']}}\n")
    queues = tmp_path / "queues.yaml"
    queues.write_text("tier2: {slaSeconds: 60}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "slmfleet.cli.main", "review", "serve",
            "--store", f"sqlite:///{tmp_path / 'd.db'}", "--reviewers", str(reviewers),
            "--queues", str(queues), "--port", str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "SLMFLEET_API_KEYS": "client-key-0123456789"},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        r = httpx.get(f"{base}/v1/review/queues", headers={"authorization": f"Bearer {KEY}"})
        assert r.json()["data"] == [
            {
                "queue": "tier2",
                "open": 0,
                "claimed": 0,
                "oldest_age_s": 0.0,
                "sla_seconds": 60,
                "breached": 0,
            }
        ]
        assert httpx.get(f"{base}/v1/review/queues").status_code == 401
        assert httpx.get(f"{base}/review/login").status_code == 200
        assert httpx.get(f"{base}/readyz").json()["decision_log"]["ok"] is True
        # Client endpoints use the client API keys, as on the router.
        fb = {"request_id": "nope", "rating": 1}
        assert httpx.post(f"{base}/v1/feedback", json=fb).status_code == 401
        client = {"authorization": "Bearer client-key-0123456789"}
        assert httpx.post(f"{base}/v1/feedback", json=fb, headers=client).status_code == 404
    finally:
        stop_group(proc)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (so the exit code says why).
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode in (0, -15) and "Traceback" not in output, output
