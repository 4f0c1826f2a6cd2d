"""The chart's telemetry parts with real helm and the real API server: PostgreSQL run by
the chart (restricted Pod, generated password, network policy), an existing server by
URL + Secret, SQLite per Pod, the router's settings and mounts, the Grafana dashboard
ConfigMap, and refusals of bad values."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from .test_chart import CHART, helm, render

pytestmark = pytest.mark.integration

DASHBOARD = CHART / "dashboards" / "slmfleet.json"


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def router_of(docs: list[dict]) -> dict:
    [dep] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-router")]
    return dep["spec"]["template"]["spec"]


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def dry_run(kube, namespace: str, docs: list[dict]) -> None:
    out = kube(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input="\n---\n".join(json.dumps(d) for d in docs),
    )  # fmt: skip
    assert len(out.strip().splitlines()) == len(docs), out


def test_postgres_run_by_the_chart(cluster, kube, namespace, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "telemetry": {
                    "decisionLog": {"store": "postgres", "content": "hashed"},
                    "postgres": {"enabled": True},
                    "review": {
                        "queues": {"tier2": {"slaSeconds": 600, "escalateTo": "senior"}},
                        "reviewersSecret": {"name": "reviewers"},
                    },
                    "tracing": {"otlpEndpoint": "http://collector:4318"},
                },
                "networkPolicy": {"enabled": True},
                "grafana": {"dashboard": {"enabled": True}},
            }
        )
    )
    docs = render(cluster, "-n", namespace, "-f", str(values))
    dry_run(kube, namespace, docs)

    [sts] = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]["securityContext"]
    assert c["readOnlyRootFilesystem"] and not c["allowPrivilegeEscalation"]
    assert c["capabilities"]["drop"] == ["ALL"] and not pod["automountServiceAccountToken"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    pg_secret = sts["metadata"]["name"]
    assert len(secrets[pg_secret]["data"]["password"]) >= 32  # generated

    env = env_of(router_of(docs))
    assert env["SLMFLEET_DECISION_STORE"] == (
        f"postgresql://slmfleet@{pg_secret}.{namespace}.svc:5432/slmfleet"
    )
    assert env["SLMFLEET_DECISION_CONTENT"] == "hashed"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    mounts = {m["mountPath"]: m for m in router_of(docs)["containers"][0]["volumeMounts"]}
    for path in (
        env["SLMFLEET_DECISION_STORE_PASSWORD_FILE"],
        env["SLMFLEET_REVIEWERS_FILE"],
        env["SLMFLEET_REVIEW_SESSION_SECRET_FILE"],
        env["SLMFLEET_REVIEW_QUEUES_FILE"],
    ):
        assert str(Path(path).parent) in mounts and mounts[str(Path(path).parent)]["readOnly"]
    [queues] = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("queues")]
    assert yaml.safe_load(queues["data"]["queues.yaml"]) == {
        "tier2": {"slaSeconds": 600, "escalateTo": "senior"}
    }
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    db = policies[pg_secret]["spec"]
    assert (
        db["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "router"
    )
    [dash] = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["slmfleet.json"]) == json.loads(DASHBOARD.read_text())


def test_sqlite_and_an_existing_server(cluster, kube, namespace):
    docs = render(
        cluster, "-n", namespace,
        "--set", "telemetry.decisionLog.store=sqlite", "--set", "router.replicas=1",
    )  # fmt: skip
    dry_run(kube, namespace, docs)
    pod = router_of(docs)
    assert env_of(pod)["SLMFLEET_DECISION_STORE"] == "sqlite:///var/lib/slmfleet/decisions.db"
    [vol] = [v for v in pod["volumes"] if v["name"] == "decisions"]
    assert vol["emptyDir"]["sizeLimit"] == "1Gi"
    assert not by_kind(docs, "StatefulSet")

    docs = render(
        cluster, "-n", namespace,
        "--set", "telemetry.decisionLog.store=postgres",
        "--set", "telemetry.postgres.url=postgresql://app@db.example:5432/slm?sslmode=require",
        "--set", "telemetry.postgres.passwordSecret.name=db-password",
    )  # fmt: skip
    pod = router_of(docs)
    assert env_of(pod)["SLMFLEET_DECISION_STORE"].startswith("postgresql://app@db.example")
    [vol] = [v for v in pod["volumes"] if v["name"] == "telemetry-db"]
    assert vol["secret"]["secretName"] == "db-password"
    assert not by_kind(docs, "StatefulSet")


def test_defaults_render_no_telemetry(cluster, namespace):
    docs = render(cluster, "-n", namespace)
    env = env_of(router_of(docs))
    assert not any(k.startswith(("SLMFLEET_DECISION", "SLMFLEET_REVIEW", "OTEL_")) for k in env)
    assert not by_kind(docs, "StatefulSet") and not by_kind(docs, "Secret")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "telemetry.decisionLog.store=postgres"], "telemetry.postgres.url"),
        (["--set", "telemetry.decisionLog.store=mysql"], "store"),
        (["--set", "telemetry.decisionLog.content=everything"], "content"),
        (["--set", "telemetry.tracing.protocol=thrift"], "protocol"),
        (["--set", "telemetry.review.queues.bad name.slaSeconds=5"], "bad name"),
        # the chart mounts no Secret for a webhook key: a path would point at nothing
        (["--set", "telemetry.review.queues.q.webhookSecretFile=/k"], "webhookSecretFile"),
        (["--set", "telemetry.postgres.url=mysql://x"], "url"),
        (["--set", "telemetry.decisionLog.store=sqlite"], "router.replicas=1"),
        (
            [
                "--set",
                "telemetry.decisionLog.store=sqlite",
                "--set",
                "router.replicas=1",
                "--set",
                "router.autoscaling.enabled=true",
            ],
            "without router.autoscaling",
        ),
    ],
)
def test_bad_values_are_refused(cluster, namespace, args, complaint):
    r = helm(cluster, "template", "rel", str(CHART), "-n", namespace, *args, check=False)
    assert r.returncode != 0 and complaint in r.stderr, r.stderr


def materialise(pod: dict, docs: list[dict], secrets: dict[str, dict[str, str]], root: Path):
    """The router container's mounts as local folders (Secrets from ``secrets`` or the
    render, ConfigMaps from the render) and its env with the mount paths moved there."""
    import base64

    volumes = {v["name"]: v for v in pod["volumes"]}
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    moved: dict[str, str] = {}
    for m in pod["containers"][0]["volumeMounts"]:
        vol, local = volumes[m["name"]], root / m["name"]
        local.mkdir(parents=True)
        moved[m["mountPath"]] = str(local)
        if "secret" in vol:
            name = vol["secret"]["secretName"]
            data = secrets.get(name) or {
                k: base64.b64decode(v).decode()
                for k, v in rendered[("Secret", name)]["data"].items()
            }
        elif "configMap" in vol:
            data = rendered[("ConfigMap", vol["configMap"]["name"])]["data"]
        else:
            continue
        items = vol.get("secret", vol.get("configMap", {})).get("items")
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, path in pairs:
            (local / path).write_text(data[key])
    env = {}
    for name, value in env_of(pod).items():
        for mount, local in sorted(moved.items(), key=lambda kv: -len(kv[0])):
            if value and value.startswith(mount + "/"):
                value = local + value[len(mount) :]
                break
        env[name] = value
    return env


def test_the_router_reads_the_charts_telemetry_settings(
    cluster, namespace, tmp_path, pg_url, jaeger, triton
):
    """helm renders the router's env and mounts; the real router runs with exactly those
    (mount paths moved to local folders): store, content, reviewers, queues, public URL
    and tracing all take effect."""
    import hashlib
    import os

    import httpx
    import orjson

    from slmfleet.local.router import RouterProcess
    from slmfleet.local.triton import free_port
    from slmfleet.telemetry.store import open_store

    from .telemetry_router import review_policy, telemetry_config
    from .telemetry_support import CLIENT_KEY

    key = "reviewer-key-from-a-secret-0123"
    values = tmp_path / "v.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "telemetry": {
                    "decisionLog": {"store": "postgres", "content": "full",
                                    "contentMaxChars": 5},
                    "postgres": {"url": pg_url, "passwordSecret": {"name": "db"}},
                    "review": {
                        "queues": {"tier2": {"slaSeconds": 600}},
                        "reviewersSecret": {"name": "reviewers"},
                        "publicUrl": "https://llm.example.com",
                    },
                    "tracing": {"otlpEndpoint": jaeger.otlp_http},
                }
            }
        )
    )  # fmt: skip
    docs = render(cluster, "-n", namespace, "-f", str(values))
    reviewers = [{"name": "carol", "keySha256": hashlib.sha256(key.encode()).hexdigest(),
                  "queues": ["tier2"]}]  # fmt: skip
    # The chart's telemetry variables (the others need a cluster: Secrets by API, ...).
    env = materialise(
        router_of(docs),
        docs,
        {"db": {"password": "unused-trust-auth"},
         "reviewers": {"reviewers.yaml": yaml.safe_dump(reviewers)}},
        tmp_path / "mounts",
    )  # fmt: skip
    telemetry_prefixes = ("SLMFLEET_DECISION", "SLMFLEET_REVIEW", "SLMFLEET_PUBLIC", "OTEL_")
    env = {k: v for k, v in env.items() if k.startswith(telemetry_prefixes)}
    assert len(env) >= 14, env
    cfg = telemetry_config(triton.grpc_url)
    cfg["policies"] = [review_policy("review-async", mode="async")]
    (tmp_path / "router.json").write_bytes(orjson.dumps(cfg))
    router = RouterProcess(
        ["--config", str(tmp_path / "router.json"), "--discovery", "off"],
        port=free_port(),
        log_path=tmp_path / "router.log",
        env={**os.environ, **env, "HOME": str(tmp_path), "SLMFLEET_API_KEYS": CLIENT_KEY},
    ).start()
    try:
        ready = httpx.get(router.url + "/readyz").json()
        assert ready["decision_log"]["backend"] == "postgres" and ready["tracing"] is True
        trace_id = os.urandom(16).hex()
        r = httpx.post(
            router.url + "/v1/chat/completions",
            json={"model": "review-async", "messages": [{"role": "user", "content": "hello!"}]},
            headers={"authorization": f"Bearer {CLIENT_KEY}",
                     "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
        )  # fmt: skip
        assert r.status_code == 202
        cid = r.json()["id"]
        assert r.headers["location"] == f"https://llm.example.com/v1/cases/{cid}"  # publicUrl
        with httpx.Client(base_url=router.url, headers={"authorization": f"Bearer {key}"}) as c:
            [queue] = c.get("/v1/review/queues").json()["data"]  # the chart's queue file
            assert (queue["queue"], queue["sla_seconds"], queue["open"]) == ("tier2", 600, 1)
            assert c.post(f"/v1/review/cases/{cid}/claim").status_code == 200
        store = open_store(pg_url)
        deadline = time.monotonic() + 10
        while (rec := store.get_decision(r.headers["x-slmfleet-request-id"])) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert rec["prompt"] == {"text": "hello", "chars": 6, "cut": True}  # content, max
        store.close()
        trace = jaeger.trace(trace_id, spans=2)
        services = {p["serviceName"] for p in trace["processes"].values()}
        assert services == {"slmfleet-router"}  # OTEL_SERVICE_NAME from the chart
    finally:
        router.stop()


def test_learning_loop_reads_the_decision_store(cluster, kube, namespace, tmp_path):
    """learning.enabled: the operator runs from the router image (the learning child
    fits the router's classifier), reads the chart's PostgreSQL with the password as a
    file, may reach it through the network policies, and needs no more RBAC (it
    writes routerpolicies/status, as the fleet loop does)."""
    values = tmp_path / "v.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "learning": {"enabled": True, "tickSeconds": 30},
                "telemetry": {"decisionLog": {"store": "postgres"}, "postgres": {"enabled": True}},
                "networkPolicy": {"enabled": True},
                "router": {"image": {"tag": "r1"}},
                "operator": {"image": {"tag": "o1"}},
            }
        )
    )
    docs = render(cluster, "-n", namespace, "-f", str(values))
    dry_run(kube, namespace, docs)
    [op] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")]
    pod = op["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"].endswith("router:r1")
    assert c["command"] == ["kopf", "run", "-m", "slmfleet.controller", "--standalone"]
    env = env_of(pod)
    [sts] = by_kind(docs, "StatefulSet")
    pg = sts["metadata"]["name"]
    assert env["SLMFLEET_LEARNING_STORE_URL"] == (
        f"postgresql://slmfleet@{pg}.{namespace}.svc:5432/slmfleet"
    )
    assert env["SLMFLEET_LEARNING_TICK_SECONDS"] == "30"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    path = Path(env["SLMFLEET_LEARNING_STORE_PASSWORD_FILE"])
    assert mounts[str(path.parent)]["readOnly"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts[str(path.parent)]["name"]]["secret"]["secretName"] == pg
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    ingress = policies[pg]["ingress"][0]["from"]
    components = {f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in ingress}
    assert components == {"router", "operator"}
    egress = [r for r in policies[op["metadata"]["name"]]["egress"] if "to" in r]
    assert any(
        t.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "decision-store"
        for r in egress
        for t in r["to"]
    )
    # off by default: the slim operator image, no store
    docs = render(cluster, "-n", namespace)
    [op] = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")]
    c = op["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in c and "/operator:" in c["image"]
    assert "SLMFLEET_LEARNING_STORE_URL" not in env_of(op["spec"]["template"]["spec"])


def test_learning_without_a_shared_store_is_refused(cluster, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"learning": {"enabled": True}}))
    out = helm(cluster, "template", "rel", str(CHART), "-f", str(values), check=False)
    assert out.returncode != 0
    assert "learning.enabled reads the decision store" in out.stderr
