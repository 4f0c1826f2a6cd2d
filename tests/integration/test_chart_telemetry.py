"""The chart's telemetry parts with real helm and the real API server: PostgreSQL run by
the chart (restricted Pod, generated password, network policy), an existing server by
URL + Secret, SQLite per Pod, the router's settings and mounts, the Grafana dashboard
ConfigMap, and refusals of bad values."""

from __future__ import annotations

import json
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
    docs = render(cluster, "-n", namespace, "--set", "telemetry.decisionLog.store=sqlite")
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
        (["--set", "telemetry.postgres.url=mysql://x"], "url"),
    ],
)
def test_bad_values_are_refused(cluster, namespace, args, complaint):
    r = helm(cluster, "template", "rel", str(CHART), "-n", namespace, *args, check=False)
    assert r.returncode != 0 and complaint in r.stderr, r.stderr
