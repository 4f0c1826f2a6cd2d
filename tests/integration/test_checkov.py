"""checkov (a pinned copy in its own virtualenv, hack/checkov.sh) on everything slmfleet
puts in a cluster: the chart with its defaults and with every feature on, and the
children the operator renders for a specialist, with the router's configuration
fragment and a tenant's Secret Role. Every finding is either fixed or explained in
docs/security.md; an unexplained one fails here.

checkov reports no severities without a Prisma Cloud key, so nothing is "low" by
default: every failed check counts.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from slmfleet.api.fragments import Fragment
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.local.cluster import binaries
from slmfleet.render.network import TritonPeers
from slmfleet.render.router_objects import RouterTarget, fragment_configmap, secret_reader
from slmfleet.render.specialist import Owner, build_children
from tests.fixtures.chart import CHART, REPO

pytestmark = pytest.mark.integration

SECURITY = REPO / "docs" / "security.md"


def checkov() -> Path:
    out = subprocess.run(["bash", str(REPO / "hack" / "checkov.sh")], check=True,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


def helm_template(*args: str, home: Path) -> str:
    """helm template (no cluster needed), with Helm's state kept in ``home``."""
    env = {"PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": str(home), "HELM_CONFIG_HOME": str(home),
           "HELM_DATA_HOME": str(home)}  # fmt: skip
    return subprocess.run(
        [str(binaries() / "helm"), "template", "rel", str(CHART), "-n", "sys", *args],
        check=True, capture_output=True, text=True, env=env, timeout=120,
    ).stdout  # fmt: skip


def rendered(out: Path) -> None:
    all_features = ["-f", str(CHART / "ci" / "all-features-values.yaml")]
    for tag, extra in (("defaults", []), ("all", all_features)):
        text = helm_template(*extra, home=out.parent / "helm")
        for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
            if doc["kind"] != "CustomResourceDefinition":
                (out / f"chart-{tag}-{i:02d}.yaml").write_text(yaml.safe_dump(doc))
    target = RouterTarget("sys", "rel-slmfleet-router-config", "rel-slmfleet-router")
    for backend, gpu in (("vllm", 1), ("python", 0)):
        spec = SLMSpecialistSpec.model_validate(
            {"model": {"uri": "hf://org/m", "backend": backend},
             "serving": {"resources": {"gpu": gpu}}}
        )  # fmt: skip
        children = build_children(
            Owner(f"s-{backend}", "shop", "uid"), spec, peers=TritonPeers("sys")
        )
        for i, doc in enumerate(children):
            (out / f"children-{backend}-{i}.yaml").write_text(yaml.safe_dump(doc))
    frag = Fragment.model_validate({"kind": "budget", "id": "shop/b", "budget": {"id": "shop/b"}})
    extras = [fragment_configmap(frag, target, "uid"), *secret_reader("shop", ["llm"], target)]
    for i, doc in enumerate(extras):
        (out / f"router-objects-{i}.yaml").write_text(yaml.safe_dump(doc))


def explained() -> set[str]:
    """Check ids with a row in docs/security.md's checkov table."""
    return set(re.findall(r"^\| `(CKV2?_K8S_\d+)` \|", SECURITY.read_text(), re.MULTILINE))


def test_no_unexplained_checkov_finding(tmp_path):
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    rendered(scanned)
    result = subprocess.run(
        [str(checkov()), "-d", str(scanned), "--framework", "kubernetes", "-o", "json",
         "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] >= 30, summary
    failed = {
        (f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]
    }
    unexplained = sorted(f for f in failed if f[0] not in explained())
    assert not unexplained, f"explain or fix in docs/security.md: {unexplained}"
    # The table lists only what still fires, so it cannot silently go stale.
    assert explained() <= {check for check, _ in failed}, explained() - {c for c, _ in failed}
