"""The supervised controller core on the real API server: the operator (kopf's own
runner, in this process) restarts a loop that fails, and its liveness endpoint turns
red when a loop is dead, which is what makes Kubernetes restart it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import pytest
from kopf.testing import KopfRunner

from slmfleet.controller import fleet, lifecycle
from slmfleet.controller.supervisor import Loop
from slmfleet.local.cluster import free_port
from tests.fixtures.cluster import specialist_manifest, wait_for

pytestmark = pytest.mark.integration


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}


def test_a_failing_fleet_loop_is_restarted_and_a_stuck_loop_turns_liveness_red(
    cluster, kube, namespace, monkeypatch
):
    config = f"cfg-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    # kopf logs in through the kubernetes library, which read KUBECONFIG at its import.
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig)
    )
    monkeypatch.setenv("SLMFLEET_ROUTER_CONFIGMAP", f"slmfleet-system/{config}")
    failures = []
    real_sync = fleet.sync_once

    async def sync_failing_once(rt):
        if not failures:
            failures.append(1)
            raise RuntimeError("an unexpected bug in the fleet render")
        await real_sync(rt)

    monkeypatch.setattr(fleet, "sync_once", sync_failing_once)
    stuck = asyncio.Event()

    async def stuck_loop(rt, beat):
        beat()
        await stuck.wait()  # never set: the loop hangs

    monkeypatch.setattr(lifecycle, "LOOPS", [*lifecycle.LOOPS, Loop("stuck", stuck_loop, 25.0)])
    port = free_port()
    args = ["run", "-m", "slmfleet.controller", "--standalone", "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz"]  # fmt: skip
    with KopfRunner(args, timeout=60) as runner:
        _, report = wait_for(lambda: (s := health(port))[0] == 200 and s, 30, "live")
        assert set(report["loops"]) == {
            "fleet",
            "specialist-status",
            "specialist-retry",
            "budget-status",
            "autoscaler",
            "learning",
            "pool-residency",
            "stuck",
        }
        # The fleet loop failed once, was restarted, and does its work.
        kube.apply(specialist_manifest("survivor"), namespace)
        wait_for(
            lambda: kube.items(
                "configmaps", "slmfleet-system", f"slmfleet.io/router-config={config}"
            ),
            60,
            "fragments written after the restart",
        )
        assert failures
        restarted = wait_for(  # kopf caches probe results for 10 s
            lambda: health(port)[1].get("loops", {}).get("fleet", {}).get("restarts"), 30
        )
        assert restarted == 1
        # The stuck loop makes no progress: liveness turns red (kopf caches probes 10 s).
        code = wait_for(lambda: health(port)[0] == 500 and 500, 40, "liveness red")
        assert code == 500
    assert runner.exception is None or isinstance(runner.exception, SystemExit)
