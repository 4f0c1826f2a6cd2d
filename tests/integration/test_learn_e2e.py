"""The learning loop end to end on real parts: labelled traffic through the real router
and the real Triton stand-ins, ``slmfleet learn`` on the outcomes, the revision accepted
by the real API server, the status written through the status subresource, and the
revised policy served by the router deciding exactly as the replay predicted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
import yaml

from slmfleet.cli.main import main
from slmfleet.learn.outcomes import OUT_OF_DOMAIN, OutcomeRecord, write_jsonl
from slmfleet.learn.relearn import split
from slmfleet.local.fleet import load_fleet, local_router_config
from slmfleet.router.acceptance import label_of
from slmfleet.router.snapshot import default_classifier_factory
from tests.learn_traffic import RISK, labelled, write_manifests

from . import router_support
from .router_support import RouterThread, write_config

pytestmark = pytest.mark.integration


def router_json(folder, triton) -> dict:
    config = local_router_config(load_fleet(folder, "shop"), triton.grpc_url)
    return config.model_dump(by_alias=True, mode="json", exclude_none=True)


def ask(client, text: str) -> dict:
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": text}]
    )
    body = raw.parse()
    return {"text": body.choices[0].message.content, **body.model_extra["slmfleet"]}


@pytest.fixture(scope="module")
def served(triton, tmp_path_factory):
    """The manifests' fleet behind the real router, on the shared Triton."""
    d = tmp_path_factory.mktemp("learn-e2e")
    fleet = write_manifests(d / "fleet")
    path = d / "router.json"
    write_config(path, router_json(fleet, triton))
    mp = pytest.MonkeyPatch()
    # the router's own factory: it learns outOfDomainExamples too
    mp.setattr(router_support, "classifier_factory", default_classifier_factory)
    with RouterThread(path) as router:
        yield d, fleet, path, router
    mp.undo()


def test_learn_from_real_traffic_and_serve_the_revision(served, triton, kube, namespace):
    d, fleet, path, router = served
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    records = []
    for i, (text, model, label) in enumerate(labelled(2)):
        dec = ask(client, text)
        records.append(
            OutcomeRecord(
                request_id=dec["request_id"],
                policy=dec["policy"],
                time=t0 + timedelta(seconds=i),
                tier=dec["tier"],
                route=None if dec["route"] == "-" else dec["route"],
                route_source=dec["route_source"],
                routing_confidence=dec["confidence"],
                answer_label=label_of(dec["text"]),
                answer_confidence=dec["answer_confidence"],
                target=dec["target"],
                cost_usd=dec["cost_usd"],
                true_route=f"shop/{model}" if model else OUT_OF_DOMAIN,
                true_label=label,
                routing_text=text,
                source="eval",
            )
        )
    write_jsonl(d / "outcomes.jsonl", records)
    (d / "risk.yaml").write_text(yaml.safe_dump(RISK))
    out = d / "proposal"
    assert (
        main(
            [
                "learn",
                str(fleet),
                str(d / "outcomes.jsonl"),
                "--policy",
                "support",
                "--risk",
                str(d / "risk.yaml"),
                "--out",
                str(out),
                "--namespace",
                "shop",
            ]
        )
        == 0
    )
    evidence = json.loads((out / "evidence.json").read_text())
    current, proposed = evidence["replay"]["current"], evidence["replay"]["proposed"]
    assert proposed["requests"] == current["requests"] > 50
    # learning from the traffic must not make routing worse on traffic it never saw
    assert proposed["inScopeAccuracy"] >= current["inScopeAccuracy"]
    assert proposed["outOfDomainRecall"] >= current["outOfDomainRecall"]

    # the real API server accepts the revision as it is, and the status as the operator
    # would write it
    kube("apply", "-n", namespace, "-f", str(fleet))
    kube("apply", "--dry-run=server", "-n", namespace, "-f", str(out / "revision.yaml"))
    kube(
        "patch",
        "routerpolicy",
        "support",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "--patch-file",
        str(out / "status.yaml"),
    )
    status = kube.get("routerpolicy", "support", namespace)["status"]
    written = yaml.safe_load((out / "status.yaml").read_text())["status"]
    assert status["thresholdProposals"] == written["thresholdProposals"]
    assert status["learning"]["learnedExamples"] == written["learning"]["learnedExamples"] > 0
    bad = {"status": {"thresholdProposals": [{"proposed": 0.5, "confidence": 1.5}]}}
    err = kube(
        "patch",
        "routerpolicy",
        "support",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert "confidence" in err and "Invalid" in err

    # serve the revision: the router decides the held-out traffic as replay predicted
    revised = d / "revised"
    write_manifests(revised)
    for doc in yaml.safe_load_all((out / "revision.yaml").read_text()):
        name = doc["metadata"]["name"]
        target = revised / ("policy.yaml" if doc["kind"] == "RouterPolicy" else "specialists.yaml")
        docs = list(yaml.safe_load_all(target.read_text()))
        docs = [doc if x["metadata"]["name"] == name else x for x in docs]
        target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    before = router.app.snapshot.digest
    write_config(path, router_json(revised, triton))
    deadline = time.monotonic() + 120
    while router.app.snapshot.digest == before:
        assert time.monotonic() < deadline, "the router did not load the revision"
        time.sleep(0.1)
    _, newest = split(records, 0.2)
    right = escalated_ood = 0
    for r in newest:
        dec = ask(client, r.routing_text)
        routed = None if dec["route"] == "-" else dec["route"]
        if r.out_of_domain:
            escalated_ood += routed is None
        else:
            right += routed == r.true_route
    n_ood = sum(1 for r in newest if r.out_of_domain)
    assert right == round(proposed["inScopeAccuracy"] * (len(newest) - n_ood))
    assert escalated_ood == round(proposed["outOfDomainRecall"] * n_ood)
