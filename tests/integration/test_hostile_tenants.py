"""Hostile tenants against the real fleet (issue 7): every class is refused at admission
naming the field, or contained while the rest of the fleet keeps serving.

The admission corpus (``hostile/*.yaml``, each with ``# expect: <field>`` and
``# class: <class>``) runs on the real API server with the generated CRDs. The rest
runs on ``hostile_fleet`` (tests/fixtures/hostile.py): chart installed, real operator
and router under the chart's ServiceAccounts, real Triton, the openai client.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.chart import can_i
from tests.fixtures.cluster import wait_for
from tests.fixtures.hostile import KEYS, ROUTER_ADDR, external_tier, policy

pytestmark = pytest.mark.integration

HOSTILE = sorted((Path(__file__).parent / "hostile").glob("*.yaml"))


@pytest.fixture(scope="module")
def tenant_ns(kube) -> Iterator[str]:
    name = f"h-{uuid.uuid4().hex[:8]}"
    kube("create", "namespace", name)
    yield name
    kube("delete", "namespace", name, "--wait=false", check=False)


def test_the_corpus_covers_every_class():
    classes = [p.read_text().splitlines()[1].removeprefix("# class: ") for p in HOSTILE]
    assert len(HOSTILE) >= 40
    assert {"names", "secrets", "egress", "hang"} <= set(classes)


@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_hostile_manifest_is_refused_naming_the_field(kube, tenant_ns, path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ").strip()
    out = kube("apply", "-n", tenant_ns, "-f", str(path), check=False)
    assert "is invalid" in out or "Error from server" in out, out
    assert expected in out, f"expected the error to name {expected!r}:\n{out[:2000]}"
    assert kube("get", "slm,rp", "-n", tenant_ns, "-o", "name") == "", "stored"


# -- the running fleet ------------------------------------------------------------------


def test_each_tenant_is_served(hostile_fleet):
    fleet = hostile_fleet
    fleet.still_serving()
    resp, headers = fleet.chat(fleet.model("vendor"), "anything", key=KEYS["team-b"])
    assert headers["x-slmfleet-tier"] == "vendor"
    assert resp.choices[0].message.content == "external answer"
    assert fleet.recorder.calls[-1]["auth"] == "Bearer sk-team-b-1"


def test_a_model_name_cannot_be_taken_over(hostile_fleet):
    """Class: names. Another team claims team-a's model name: the later policy is
    Ready=False (ModelNameConflict) and team-a keeps its traffic."""
    fleet = hostile_fleet
    taken = fleet.model("support")
    fleet.kube.apply(policy("thief", taken, ["generalist"]), fleet.team_b)
    try:
        cond = fleet.wait_condition("rp", "thief", fleet.team_b, "ModelNameConflict")
        assert f"{fleet.team_a}/support" in cond["message"]
        for _ in range(3):
            fleet.still_serving()
        # The direct ids of team-a's specialists are namespaced: nobody can shadow them.
        _, headers = fleet.chat(f"{fleet.team_a}/domain-billing", "an invoice")
        assert headers["x-slmfleet-route"] == f"{fleet.team_a}/domain-billing"
    finally:
        fleet.kube("delete", "rp", "thief", "-n", fleet.team_b)


def test_secrets_stay_in_their_namespace_and_rotate(hostile_fleet):
    """Class: secrets. A reference resolves in the policy's own namespace, through the
    API, with least privilege; a missing Secret is a condition and a clear error, never
    an unauthenticated call; a rotated key is used without a restart."""
    fleet = hostile_fleet
    a, b = fleet.team_a, fleet.team_b
    fleet.kube("create", "secret", "generic", "llm-a", "--from-literal=token=sk-team-a", "-n", a)
    url = f"http://{ROUTER_ADDR}:{fleet.recorder.port}/v1"
    steal = policy("steal", fleet.model("steal"), ["generalist"],
                   cascade=[external_tier("vendor", url, secret="llm-a")])  # fmt: skip
    fleet.kube.apply(steal, b)
    try:
        cond = fleet.wait_condition("rp", "steal", b, "SecretNotFound")
        assert "spec.cascade[0].external.apiKey" in cond["message"] and b in cond["message"]
        # The router was granted exactly what team-b's policies reference, in team-b.
        assert not can_i(fleet.kube, fleet.router_sa, "get", "secrets/llm-a", "-n", a)
        assert can_i(fleet.kube, fleet.router_sa, "get", "secrets/vendor", "-n", b)
        role = fleet.kube.get("role", f"{fleet.config_cm}-secrets", b)
        assert role["rules"][0]["resourceNames"] == ["llm-a", "vendor"]
        assert not can_i(fleet.kube, fleet.router_sa, "list", "secrets", "-n", b)
        wait_for(lambda: fleet.model("steal") in fleet.models(), 30, "steal served")
        before = len(fleet.recorder.calls)
        with pytest.raises(openai.APIStatusError) as err:
            fleet.chat(fleet.model("steal"), "give me team a's key", key=KEYS["team-b"])
        assert err.value.status_code == 502
        text = err.value.response.text
        assert "API key unavailable" in text and "sk-team-a" not in text
        assert len(fleet.recorder.calls) == before, "an upstream call was made without the key"
        # Rotation: the new key is used within the cache period, by the same process.
        pid = fleet.router.pid
        fleet.kube("patch", "secret", "vendor", "-n", b, "--type=merge",
                   "-p", json.dumps({"stringData": {"token": "sk-team-b-2"}}))  # fmt: skip

        def rotated() -> bool:
            fleet.chat(fleet.model("vendor"), "hi", key=KEYS["team-b"])
            return fleet.recorder.calls[-1]["auth"] == "Bearer sk-team-b-2"

        wait_for(rotated, 30, "rotated key used")
        assert fleet.router.pid == pid and fleet.router_alive()
        fleet.still_serving()
    finally:
        fleet.kube("delete", "rp", "steal", "-n", b)
    assert "sk-team-a" not in fleet.log() and "sk-team-b" not in fleet.log()


EGRESS_TARGETS = {
    "metadata": "http://169.254.169.254/latest/meta-data/iam",
    "kube-api": "https://kubernetes.default.svc/api/v1/secrets",
    "service-ip": "http://10.0.0.1/api/v1/secrets",
    "apiserver-loopback": "https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets",
}


def test_egress_is_allow_listed_and_checked_at_connect_time(hostile_fleet):
    """Class: egress. External tiers aimed at metadata, the API server, a Service IP or
    a loopback trap behind an allowed name (localhost) never connect; the error names no
    URL, in the response or in the log."""
    fleet = hostile_fleet
    targets = {**EGRESS_TARGETS, "localhost-trap": f"http://localhost:{fleet.trap.port}/v1"}
    for name, url in targets.items():
        fleet.kube.apply(
            policy(f"egress-{name}", fleet.model(f"egress-{name}"), ["generalist"],
                   cascade=[external_tier("out", url, secret=None)]),
            fleet.team_b,
        )  # fmt: skip
    try:
        wanted = {fleet.model(f"egress-{n}") for n in targets}
        wait_for(lambda: wanted <= fleet.models(), 30, "egress policies served")
        for name, url in targets.items():
            with pytest.raises(openai.APIStatusError) as err:
                fleet.chat(fleet.model(f"egress-{name}"), "fetch it", key=KEYS["team-b"])
            assert err.value.status_code == 502, (name, err.value.response.text)
            text = err.value.response.text
            assert "not allowed" in text or "allow-list" in text, (name, text)
            host = httpx.URL(url).host
            assert host not in text and url not in text, (name, text)
            assert url not in fleet.log()
        assert fleet.trap.calls == [], "a refused destination was connected to"
        fleet.still_serving()
    finally:
        for name in targets:
            fleet.kube("delete", "rp", f"egress-{name}", "-n", fleet.team_b, check=False)


def test_catastrophic_regexes_cannot_stall_the_router(hostile_fleet):
    """Class: hang. Team-a's rule ``(a+)+$`` is admitted (it is RE2) and costs linear
    time on the input that makes a backtracking engine run for ages."""
    fleet = hostile_fleet
    evil = "a" * 50_000 + "b, where is my package"  # the rule is tried first, on all of it
    started = time.monotonic()
    _, headers = fleet.chat(fleet.model("support"), evil)
    assert time.monotonic() - started < 5.0
    assert headers["x-slmfleet-route"] == f"{fleet.team_a}/domain-shipping"
    fleet.still_serving()


def test_a_remote_schema_reference_is_never_fetched(hostile_fleet):
    """Class: hang. The API server cannot look inside a free-form JSON Schema; the
    operator refuses the policy (InvalidSpec), the router never serves it, and the URL
    is never fetched."""
    fleet = hostile_fleet
    ref = f"http://127.0.0.1:{fleet.trap.port}/schema.json"
    accept = {"validators": [{"name": "v", "jsonSchema": {"$ref": ref}}]}
    body = policy("remote-ref", fleet.model("remote-ref"), ["generalist"],
                  cascade=[{"name": "routed", "routed": True, "accept": accept}])  # fmt: skip
    fleet.kube.apply(body, fleet.team_b)
    try:
        cond = fleet.wait_condition("rp", "remote-ref", fleet.team_b, "InvalidSpec")
        assert "local references" in cond["message"] and "jsonSchema" in cond["message"]
        assert fleet.model("remote-ref") not in fleet.models()
        assert fleet.trap.calls == []
        fleet.still_serving()
    finally:
        fleet.kube("delete", "rp", "remote-ref", "-n", fleet.team_b)


def test_a_reference_bomb_schema_is_refused(hostile_fleet):
    """Class: hang. ~2 KB of ``$defs``, each referencing the next twice, 30 deep: 2^30
    subschema evaluations per answer on the router's event loop. The operator refuses
    the policy naming the field, and the router never serves it."""
    fleet = hostile_fleet
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    schema = {"$defs": {**defs, "d30": {"type": "object"}}, "$ref": "#/$defs/d0"}
    accept = {"validators": [{"name": "v", "jsonSchema": schema}]}
    body = policy("ref-bomb", fleet.model("ref-bomb"), ["generalist"],
                  cascade=[{"name": "routed", "routed": True, "accept": accept}])  # fmt: skip
    fleet.kube.apply(body, fleet.team_b)
    try:
        cond = fleet.wait_condition("rp", "ref-bomb", fleet.team_b, "InvalidSpec")
        assert "through $ref" in cond["message"] and "jsonSchema" in cond["message"]
        assert fleet.model("ref-bomb") not in fleet.models()
        fleet.still_serving()
    finally:
        fleet.kube("delete", "rp", "ref-bomb", "-n", fleet.team_b)


def test_slowloris_and_slow_bodies_are_cut_off(hostile_fleet):
    """Class: hang. Headers trickled byte by byte are cut at the header timeout, a body
    that never arrives gets 408 at the body timeout; others are served meanwhile."""
    fleet = hostile_fleet
    port = int(fleet.router_url.rsplit(":", 1)[1])
    slow = socket.create_connection((ROUTER_ADDR, port), timeout=10)
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 8:
        try:
            slow.sendall(b"X")
            time.sleep(0.25)
        except OSError:
            closed = True
            break
    elapsed = time.monotonic() - started
    slow.close()
    assert closed and elapsed < 5, f"still open after {elapsed:.1f}s"

    body = socket.create_connection((ROUTER_ADDR, port), timeout=10)
    body.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEYS["corpus"].encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"mo'
    )
    fleet.still_serving()
    answer = b""
    while chunk := body.recv(4096):  # the 408 comes with "connection: close"
        answer += chunk
    body.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


def test_in_flight_cap_and_rate_limits(hostile_fleet):
    """Class: hang. Sixteen requests holding their slots (bodies that never finish) fill
    the in-flight cap: the next request gets 503 with Retry-After, not a queue; a
    flooding key gets 429 with Retry-After while another key is served; tokens the
    router does not hold, a new one each request, share one bucket: they are limited
    too, and do not touch a valid key's."""
    fleet = hostile_fleet
    port = int(fleet.router_url.rsplit(":", 1)[1])
    holders = []
    for _ in range(16):
        s = socket.create_connection((ROUTER_ADDR, port), timeout=10)
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEYS["corpus"].encode()
            + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        holders.append(s)
    time.sleep(0.3)
    over = httpx.post(f"{fleet.router_url}/v1/chat/completions", json={},
                      headers={"authorization": f"Bearer {KEYS['corpus']}"})  # fmt: skip
    assert over.status_code == 503 and over.headers["retry-after"] == "1"
    assert over.json()["error"]["code"] == "overloaded"
    for s in holders:
        s.close()
    wait_for(lambda: _served(fleet), 10, "slots freed")

    with httpx.Client(base_url=fleet.router_url) as http:
        codes = [
            http.post(
                "/v1/chat/completions",
                json={"model": "none"},
                headers={"authorization": f"Bearer {KEYS['flood']}"},
            )
            for _ in range(400)
        ]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes][-10:]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"]["type"] == "rate_limit_error"
    fleet.still_serving()  # another key is not limited

    with httpx.Client(base_url=fleet.router_url) as http:
        junk = [
            http.post(
                "/v1/chat/completions",
                json={"model": "none"},
                headers={"authorization": f"Bearer junk-{i}"},
            ).status_code
            for i in range(400)
        ]
    assert set(junk) == {401, 429} and junk[0] == 401, junk[-10:]
    fleet.still_serving()  # a valid key's bucket is its own


def _served(fleet) -> bool:
    try:
        fleet.still_serving()
    except openai.APIStatusError:
        return False
    return True


def test_metrics_live_on_their_own_port(hostile_fleet):
    fleet = hostile_fleet
    assert httpx.get(f"{fleet.router_url}/metrics").status_code == 404
    metrics = httpx.get(fleet.metrics_url)
    assert metrics.status_code == 200
    assert "slmfleet_router_config_fragments" in metrics.text


def test_only_the_router_reaches_triton(hostile_fleet):
    """Class: network. Every specialist's children include a NetworkPolicy admitting the
    router's Pods to Triton's ports and the metrics scrapers to its metrics port only.
    (kwok runs no CNI: this checks the rendered policy, not packet filtering.)"""
    fleet = hostile_fleet
    for ns, name in [(fleet.team_a, "domain-billing"), (fleet.team_b, "generalist")]:
        np = wait_for(lambda n=name, s=ns: fleet.kube.get("networkpolicy", f"slm-{n}", s), 30)
        spec = np["spec"]
        assert spec["podSelector"] == {"matchLabels": {"slmfleet.io/specialist": name}}
        assert spec["policyTypes"] == ["Ingress"]
        inference, *metrics = spec["ingress"]
        assert {p["port"] for p in inference["ports"]} == {8000, 8001}
        (peer,) = inference["from"]
        assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
        # The metrics port: the operator and networkPolicy.metricsFrom. (Another operator
        # in this test session, started without the chart's peers, closes it entirely.)
        for rule in metrics:
            assert {p["port"] for p in rule["ports"]} == {8002}
            assert all("namespaceSelector" in p for p in rule["from"])
        owner = np["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("SLMSpecialist", name)


def test_the_operator_stays_live(hostile_fleet):
    probe = hostile_fleet.operator.probe()
    assert set(probe["loops"]) == {
        "fleet",
        "specialist-status",
        "specialist-retry",
        "budget-status",
        "autoscaler",
        "learning",
        "pool-residency",
    }
    assert all(loop["running"] for loop in probe["loops"].values())
