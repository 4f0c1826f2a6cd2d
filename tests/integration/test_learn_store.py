"""The learning loop on the decision store, on real parts: traffic through the real
router and the real Triton stand-ins into a real SQLite decision store, feedback through
the router's API, ``slmfleet learn --store``, the revision (calibrators and thresholds
on their scale) accepted by the real API server, and the revision served: the router's
confidence header is the logged raw confidence through the proposed calibrator."""

from __future__ import annotations

import json
import time

import openai
import pytest
import yaml

from slmfleet.api.learning import Calibration
from slmfleet.cli.main import main
from slmfleet.learn.calibrator import apply, calibrate_answer
from slmfleet.local.fleet import load_fleet, local_router_config
from slmfleet.router.acceptance import label_of
from slmfleet.router.app import Settings
from slmfleet.router.snapshot import default_classifier_factory
from slmfleet.telemetry.store import open_store
from tests.learn_traffic import RISK, labelled, write_manifests

from . import router_support
from .router_support import RouterThread, write_config
from .telemetry_support import CLIENT_KEY, make_telemetry, sqlite_url

pytestmark = pytest.mark.integration


def router_json(folder, triton) -> dict:
    config = local_router_config(load_fleet(folder, "shop"), triton.grpc_url)
    return config.model_dump(by_alias=True, mode="json", exclude_none=True)


def ask(client, text: str) -> tuple[dict, dict]:
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": text}]
    )
    body = raw.parse()
    return {"text": body.choices[0].message.content, **body.model_extra["slmfleet"]}, raw.headers


@pytest.fixture(scope="module")
def served(triton, tmp_path_factory):
    d = tmp_path_factory.mktemp("learn-store")
    fleet = write_manifests(d / "fleet", decisionLog={"content": "full"})
    path = d / "router.json"
    write_config(path, router_json(fleet, triton))
    url = sqlite_url(d)
    mp = pytest.MonkeyPatch()
    mp.setattr(router_support, "classifier_factory", default_classifier_factory)
    with RouterThread(
        path, settings=Settings(api_keys=frozenset({CLIENT_KEY})), telemetry=make_telemetry(url)
    ) as router:
        yield d, fleet, path, router, url
    mp.undo()


def test_learn_from_the_decision_store_and_serve_calibrated(served, triton, kube, namespace):
    d, fleet, path, router, url = served
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    traffic = labelled(3)
    answered = [(ask(client, text)[0], model, label) for text, model, label in traffic]
    for dec, model, label in answered:  # feedback as a client gives it, by request id
        if model is None:
            body = {"request_id": dec["request_id"], "label": "out_of_domain"}
        else:
            right = dec["route"] == f"shop/{model}" and label_of(dec["text"]) == label
            body = {"request_id": dec["request_id"], "rating": 1 if right else -1, "label": label}
        client.post("/feedback", cast_to=object, body=body)
    store = open_store(url)
    try:
        deadline = time.monotonic() + 30
        while len(store.labelled(0.0, 10_000)) < len(traffic):
            assert time.monotonic() < deadline, "feedback was not stored"
            time.sleep(0.1)
    finally:
        store.close()

    (d / "risk.yaml").write_text(yaml.safe_dump(RISK))
    out = d / "proposal"
    args = ["learn", str(fleet), "--store", url, "--policy", "support"]
    args += ["--risk", str(d / "risk.yaml"), "--out", str(out), "--namespace", "shop"]
    assert main(args) == 0
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["outcomes"] == len(traffic)
    status = yaml.safe_load((out / "status.yaml").read_text())["status"]
    assert status["learning"]["learnedExamples"] > 0  # routing texts from the log
    assert status["learning"]["learnedOutOfDomainExamples"] > 0  # out_of_domain feedback
    assert status["thresholdProposals"], "no threshold proposed from the store's outcomes"
    revision = list(yaml.safe_load_all((out / "revision.yaml").read_text()))
    policy = next(doc for doc in revision if doc["kind"] == "RouterPolicy")
    cal = Calibration.model_validate(policy["spec"]["calibration"])
    assert cal.routing is not None and cal.routing.method != "identity"

    # the real API server accepts the revision as it is
    kube("apply", "-n", namespace, "-f", str(fleet))
    kube("apply", "--dry-run=server", "-n", namespace, "-f", str(out / "revision.yaml"))

    # serve the revision: the confidences the router reports are the calibrated ones
    revised = d / "revised"
    write_manifests(revised, decisionLog={"content": "full"})
    (revised / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    before = router.app.snapshot.digest
    write_config(path, router_json(revised, triton))
    deadline = time.monotonic() + 120
    while router.app.snapshot.digest == before:
        assert time.monotonic() < deadline, "the router did not load the revision"
        time.sleep(0.1)
    probes = [(ask(client, text), model) for text, model, _ in labelled(4)[:12]]
    store = open_store(url)
    try:
        checked = 0
        for (dec, headers), _model in probes:
            rec = _wait(store, dec["request_id"])
            raw = rec["route"].get("raw_confidence", rec["route"]["confidence"])
            want = apply(cal.routing, raw)
            assert float(headers["x-slmfleet-confidence"]) == pytest.approx(want, abs=2e-4)
            if dec["answer_confidence"] is not None and rec.get("tier"):
                raw_answer = rec.get("raw_answer_confidence", rec["answer_confidence"])
                want = calibrate_answer(cal, rec["tier"], label_of(dec["text"]), raw_answer)
                assert dec["answer_confidence"] == pytest.approx(want, abs=1e-5)
            checked += rec["route"].get("raw_confidence") is not None
        assert checked > 0, "no decision was calibrated"
    finally:
        store.close()


def _wait(store, rid: str) -> dict:
    deadline = time.monotonic() + 10
    while (rec := store.get_decision(rid)) is None:
        assert time.monotonic() < deadline, f"decision {rid} was not written"
        time.sleep(0.05)
    return rec
