"""``slmfleet up`` as a user runs it: a subprocess, its printed endpoint, the official
openai client, and Ctrl-C (SIGINT) stopping everything it started."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from slmfleet.api.routerconfig import SpendWindowConfig
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings
from slmfleet.local.triton import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "examples" / "retail-support"


class Up:
    """``slmfleet up ...`` with its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slmfleet.cli", "up", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines))

    def interrupt(self, timeout: float) -> float:
        begin = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - begin

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def up():
    started: list[Up] = []

    def start(*args: str) -> Up:
        started.append(Up(*args))
        return started[-1]

    yield start
    for u in started:
        u.kill()


costs: list[float] = []


def chat(client: openai.OpenAI, model: str, text: str):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    costs.append(json.loads(raw.http_response.content)["slmfleet"]["cost_usd"])
    return raw.parse().choices[0].message.content, raw.headers


async def read_window(url: str, budget_id: str, window: str):
    led = RedisLedger(RedisSettings(url=url, timeout_s=2.0))
    try:
        read = await led.read(
            [BudgetLimits(budget_id, (SpendWindowConfig(window=window, limit_usd=1),))]
        )
        assert read.available, read.error
        return read.states[(budget_id, window)]
    finally:
        await led.close()


def test_up_serves_the_retail_fleet_and_stops_on_ctrl_c(up, tmp_path):
    """With --redis: the spend goes to a local redis-server, as a cluster keeps it."""
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (which ships tritonserver) is not installed")
    port = free_port()
    ledger = tmp_path / "ledger"
    costs.clear()
    fleet = up(
        str(RETAIL), "--port", str(port), "--state-dir", str(tmp_path),
        "--redis", "--redis-dir", str(ledger),
    )  # fmt: skip
    line = fleet.wait_for("slmfleet is serving at", timeout=300)
    url = line.split("serving at", 1)[1].strip()
    assert url == f"http://127.0.0.1:{port}/v1"
    out = "\n".join(fleet.lines)
    assert "Triton ready: 8 models" in out and "Router ready: classifier fitted" in out
    ledger_url = out.split("Spend ledger: redis-server on ", 1)[1].split(",", 1)[0]
    fleet.wait_for("Press Ctrl-C to stop", timeout=10)
    printed = "\n".join(fleet.lines)
    assert "from openai import OpenAI" in printed and "curl -si" in printed
    children = psutil.Process(fleet.proc.pid).children(recursive=True)
    assert any("tritonserver" in " ".join(c.cmdline()) for c in children)

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    assert {"retail-support", "order-lookup"} <= {m.id for m in client.models.list()}

    text, h = chat(client, "retail-support", "where is my package")
    assert h["x-slmfleet-policy"] == "retail-support"
    assert h["x-slmfleet-route"] == "retail-support/shipping"
    assert h["x-slmfleet-tier"] == "specialist" and text.startswith("tracking:")

    text, h = chat(client, "retail-support", "can you send me a copy of my invoice")
    assert h["x-slmfleet-route"] == "retail-support/billing" and text.startswith("invoice:")

    # A refund needs 0.97 answer confidence: this one is less sure, so it escalates.
    text, h = chat(client, "retail-support", "give me my money back")
    assert h["x-slmfleet-route"] == "retail-support/returns"
    assert h["x-slmfleet-escalations"] == "specialist:label_threshold:refund"
    assert h["x-slmfleet-tier"] == "generalist" and "retail generalist" in text

    # Structured extraction: valid JSON is accepted; prose fails the validator of both
    # models, so a person at the order desk gets a case (202: the client polls it).
    text, h = chat(client, "order-lookup", "order id AB-12345 from bob@example.com")
    assert h["x-slmfleet-tier"] == "extractor" and '"order_id": "AB-12345"' in text
    raw = client.chat.completions.with_raw_response.create(
        model="order-lookup", messages=[{"role": "user", "content": "hello there"}]
    )
    assert raw.http_response.status_code == 202
    costs.append(float(raw.headers["x-slmfleet-cost-usd"]))  # its two tiers were charged
    assert raw.headers["x-slmfleet-escalations"] == (
        "extractor:validator:order-json,generalist:validator:order-json"
    )
    case_id = raw.headers["x-slmfleet-review-case"]
    assert client.get(f"/cases/{case_id}", cast_to=object)["status"] == "pending"
    fleet.wait_for(f"case={case_id}", timeout=10)  # the request log line names it

    # The local reviewer (its key in the state directory) resolves it; the client polls.
    base = url.removesuffix("/v1")
    assert f"review console: {base}/review" in "\n".join(fleet.lines)
    key = (tmp_path / "reviewer.key").read_text().strip()
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}) as r:
        assert r.post(f"/v1/review/cases/{case_id}/claim").status_code == 200
        done = r.post(
            f"/v1/review/cases/{case_id}/resolve", json={"answer": '{"order_id": "AB-00001"}'}
        )
        assert done.status_code == 200, done.text
    polled = client.get(f"/cases/{case_id}", cast_to=object)
    assert polled["status"] == "resolved" and polled["answer"] == '{"order_id": "AB-00001"}'
    # Feedback for an earlier answer, joined to its decision in the local store.
    fb = client.post(
        "/feedback", body={"request_id": h["x-slmfleet-request-id"], "rating": 1}, cast_to=object
    )
    assert fb["rating"] == 1
    assert (tmp_path / "decisions.db").is_file()

    # Every answer's cost is in the shared ledger, in both windows of the retail Budget.
    for window in ("1h", "1d"):
        st = asyncio.run(read_window(ledger_url, "retail-support/retail-support", window))
        for _ in range(100):  # the router settles in the background, just after answering
            if st.reserved.nano_usd == 0:
                break
            time.sleep(0.05)
            st = asyncio.run(read_window(ledger_url, "retail-support/retail-support", window))
        assert st.spent.usd == pytest.approx(sum(costs), abs=1e-7) and st.spent.usd > 0
        assert st.reserved.usd == 0

    took = fleet.interrupt(timeout=30)
    assert fleet.proc.returncode == 0, "\n".join(fleet.lines)
    assert took < 15, f"stopping took {took:.1f}s"
    assert fleet.lines[-1] == "Stopped."
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
    assert list(ledger.glob("**/*.aof*"))  # redis-server flushed its AOF when it stopped


def test_up_cluster_goes_ready_and_tears_down(up):
    fleet = up("--cluster", str(RETAIL))
    fleet.wait_for("all Ready: 11 resources in namespace retail-support", timeout=240)
    kubeconfig = Path(fleet.wait_for("export KUBECONFIG=", timeout=10).split("=", 1)[1].strip())
    assert kubeconfig.is_file()
    out = "\n".join(fleet.lines)
    assert "rp/retail-support" in out and "TargetsReady" in out
    children = psutil.Process(fleet.proc.pid).children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert "kube-apiserver" in names and "kopf" in names
    took = fleet.interrupt(timeout=60)
    assert fleet.proc.returncode == 0, "\n".join(fleet.lines)
    assert took < 30, f"teardown took {took:.1f}s"
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    assert not kubeconfig.exists()
