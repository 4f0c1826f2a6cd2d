"""The chart's shared-ledger options, rendered by real helm, accepted by the real API
server; the Redis it runs starts with its rendered arguments on the real redis-server."""

from __future__ import annotations

import json
import subprocess

import pytest

from slmfleet.local.cluster import free_port
from tests.integration.test_chart import CHART, helm, render

pytestmark = pytest.mark.integration

REDIS = ["--set", "ledger.mode=redis", "--set", "ledger.redis.auth.existingSecret=ledger-pw"]
EXTERNAL = [
    "--set", "ledger.mode=external", "--set", "ledger.external.url=rediss://valkey:6380/0",
    "--set", "ledger.external.passwordSecret.name=vk",
    "--set", "ledger.external.tls.caSecret.name=vk-ca",
]  # fmt: skip


def env_of(docs, name):
    dep = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(name)
    )
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_ledger_modes_render_and_are_accepted(cluster, kube, namespace):
    for extra in (REDIS, EXTERNAL):
        docs = render(cluster, "-n", namespace, *extra)
        out = kube("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                   input="\n---\n".join(json.dumps(d) for d in docs))  # fmt: skip
        assert len(out.strip().splitlines()) == len(docs)
        for component in ("router", "operator"):
            env = env_of(docs, component)
            assert env["SLMFLEET_LEDGER_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    docs = render(cluster, "-n", namespace, *REDIS)
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["args"][:2] == ["--appendonly", "yes"]
    assert env_of(docs, "router")["SLMFLEET_LEDGER_URL"]["value"].startswith("redis://")
    ext = env_of(render(cluster, "-n", namespace, *EXTERNAL), "router")
    assert ext["SLMFLEET_LEDGER_CA_FILE"]["value"].endswith("/ca.crt")
    # Without a password Secret, or a URL, the chart refuses to render.
    bad = helm(cluster, "template", "rel", str(CHART), "--set", "ledger.mode=redis", check=False)
    assert bad.returncode != 0 and "existingSecret" in bad.stderr
    assert render(cluster, "-n", namespace) and "SLMFLEET_LEDGER_URL" not in env_of(
        render(cluster, "-n", namespace), "router"
    )


def test_rendered_redis_arguments_start_the_real_redis_server(cluster, namespace, tmp_path):
    docs = render(cluster, "-n", namespace, *REDIS)
    args = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    args = [a.replace("$(REDIS_PASSWORD)", "pw").replace("/data", str(tmp_path)) for a in args]
    port = free_port()
    proc = subprocess.Popen(["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        import time

        import redis

        client = redis.Redis(port=port, password="pw")
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
