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


def pod_of(docs, name):
    dep = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(name)
    )
    return dep["spec"]["template"]["spec"]


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
            # The password as a file from the Secret, never an environment variable.
            assert "SLMFLEET_LEDGER_PASSWORD" not in env
            path = env["SLMFLEET_LEDGER_PASSWORD_FILE"]["value"]
            pod = pod_of(docs, component)
            (mount,) = [
                m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "ledger-auth"
            ]
            assert path == mount["mountPath"] + "/password" and mount["readOnly"]
            (vol,) = [v for v in pod["volumes"] if v["name"] == "ledger-auth"]
            assert vol["secret"]["items"] == [{"key": "password", "path": "password"}]
            assert vol["secret"]["secretName"] in ("ledger-pw", "vk")
    docs = render(cluster, "-n", namespace, *REDIS)
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["command"] == ["sh", "-c"] and c["args"][0].startswith("exec redis-server ")
    assert "--appendonly yes --appendfsync everysec" in c["args"][0]
    assert not [e for e in c.get("env", []) if "PASSWORD" in e["name"]]
    assert env_of(docs, "router")["SLMFLEET_LEDGER_URL"]["value"].startswith("redis://")
    ext = env_of(render(cluster, "-n", namespace, *EXTERNAL), "router")
    assert ext["SLMFLEET_LEDGER_CA_FILE"]["value"].endswith("/ca.crt")
    # Without a password Secret, or a URL, the chart refuses to render.
    bad = helm(cluster, "template", "rel", str(CHART), "--set", "ledger.mode=redis", check=False)
    assert bad.returncode != 0 and "existingSecret" in bad.stderr
    assert render(cluster, "-n", namespace) and "SLMFLEET_LEDGER_URL" not in env_of(
        render(cluster, "-n", namespace), "router"
    )


def test_only_the_router_and_the_operator_reach_the_chart_ledger(cluster, kube, namespace):
    docs = render(cluster, "-n", namespace, *REDIS, "--set", "networkPolicy.enabled=true")
    out = kube("apply", "--dry-run=server", "-n", namespace, "-f", "-",
               input="\n---\n".join(json.dumps(d) for d in docs))  # fmt: skip
    assert len(out.strip().splitlines()) == len(docs)
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    ledger = next(spec for name, spec in policies.items() if name.endswith("-ledger"))
    assert ledger["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ledger"
    assert ledger["egress"] == [] and set(ledger["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = ledger["ingress"]
    assert {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]
    } == {
        "router",
        "operator",
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    for component in ("router", "operator"):
        spec = next(s for n, s in policies.items() if n.endswith(f"-{component}"))
        to_ledger = [
            e
            for e in spec["egress"]
            for peer in e.get("to", [])
            if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
            == "ledger"
        ]
        assert to_ledger and to_ledger[0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    # The ledger's own policy is there even without networkPolicy.enabled; no ledger, none.
    names = [d["metadata"]["name"] for d in render(cluster, "-n", namespace, *REDIS)
             if d["kind"] == "NetworkPolicy"]  # fmt: skip
    assert [n for n in names if n.endswith("-ledger")]
    assert not [
        d for d in render(cluster, "-n", namespace) if d["metadata"]["name"].endswith("-ledger")
    ]


def test_rendered_redis_command_starts_the_real_redis_server(cluster, namespace, tmp_path):
    """The StatefulSet's command, run by sh as the container would (paths moved to a
    temporary directory): AOF on, no eviction, the password from the mounted file, and
    redis-server itself as the process that gets SIGTERM (it flushes the AOF)."""
    docs = render(cluster, "-n", namespace, *REDIS)
    c = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"][
        "containers"
    ][0]
    secrets = tmp_path / "auth"
    secrets.mkdir()
    (secrets / "password").write_text("pw\n")
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    script = (
        c["args"][0]
        .replace("/var/run/secrets/slmfleet-ledger-auth", str(secrets))
        .replace("/data", str(data))
        + f" --port {port} --bind 127.0.0.1"
    )
    proc = subprocess.Popen([*c["command"], script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
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
        assert client.info("server")["process_id"] == proc.pid  # exec: no shell in between
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
        client.set("k", "v")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert list(data.rglob("*.aof*"))  # flushed on SIGTERM


def notes(cluster, *args: str) -> str:
    """What `helm install` prints after installing (NOTES.txt), rendered by real helm."""
    out = helm(cluster, "install", "rel", str(CHART), "-n", "sys", "--dry-run=client", *args)
    return out.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        ((), "2 router replicas"),  # the defaults: 2 replicas, no shared ledger
        (("--set", "router.autoscaling.enabled=true"), "up to 10 router replicas"),
        (("--set", "router.replicas=1"), None),
        (("--set", "router.replicas=1", "--set", "router.autoscaling.enabled=true"), "up to 10"),
        (REDIS, None),
        (EXTERNAL, None),
    ],
    ids=["defaults", "hpa", "one-replica", "one-replica-hpa", "redis", "external"],
)
def test_install_notes_warn_when_budgets_hold_per_replica(cluster, args, warned):
    """Without a shared ledger each router replica enforces every Budget on its own:
    the install says so whenever more than one replica can run."""
    text = notes(cluster, *args)
    assert "kubectl" in text  # the notes rendered at all
    if warned is None:
        assert "ledger.mode is none" not in text
    else:
        assert "WARNING: ledger.mode is none" in text and warned in text, text
        assert "ledger.mode=redis" in text  # and says what to do
