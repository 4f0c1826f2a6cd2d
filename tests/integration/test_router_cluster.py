"""The router in a cluster: it serves what the operator renders, and follows changes.

Real control plane, real operator, real router (a subprocess reading the operator's
ConfigMap through the Kubernetes API), real openai client for /v1/models.
"""

from __future__ import annotations

import json
import os
import time

import openai
import pytest

from slmfleet.local.cluster import free_port
from slmfleet.local.router import RouterProcess
from tests.fixtures.cluster import specialist_manifest as specialist
from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.integration


def policy(name: str, model_name: str, names: list[str]) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "RouterPolicy",
        "metadata": {"name": name},
        "spec": {"modelName": model_name, "specialists": {"names": names}},
    }


@pytest.fixture
def router(cluster, operator, tmp_path):
    proc = RouterProcess(
        ["--configmap", "slmfleet-system/slmfleet-router", "--no-access-log"],
        port=free_port(),
        log_path=tmp_path / "router.log",
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        startup_timeout=60,
    )
    yield proc.start().url
    proc.stop()


def model_ids(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list().data}


def test_policy_changes_reach_the_router(kube, namespace, router):
    ns = namespace
    client = openai.OpenAI(base_url=f"{router}/v1", api_key="unused")
    for name in ("faq", "orders"):
        kube.apply(specialist(name), ns)
    kube.apply(policy("support", f"support-{ns}", ["faq", "orders"]), ns)
    wait_for(lambda: f"support-{ns}" in model_ids(client), 30, "policy served")
    assert {f"{ns}/faq", f"{ns}/orders"} <= model_ids(client)

    # A change to the policy is served within moments, without a restart.
    started = time.monotonic()
    kube("patch", "rp", "support", "-n", ns, "--type=merge",
         "-p", json.dumps({"spec": {"modelName": f"help-{ns}"}}))  # fmt: skip
    wait_for(lambda: f"help-{ns}" in model_ids(client), 30, "renamed policy served")
    elapsed = time.monotonic() - started
    assert f"support-{ns}" not in model_ids(client)
    print(f"policy change reached the router in {elapsed:.2f} s")

    # The old name is gone for good: clients get OpenAI's 404.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=f"support-{ns}", messages=[{"role": "user", "content": "hi"}]
        )

    # Deleting the policy removes its model.
    kube("delete", "rp", "support", "-n", ns)
    wait_for(lambda: f"help-{ns}" not in model_ids(client), 30, "policy withdrawn")
