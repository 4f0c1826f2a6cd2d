"""The Grafana dashboard the chart ships queries only metrics that exist: every metric
name in every PromQL expression is checked against a live ``/metrics`` of the real
router (uvicorn, its real registry: the router registers the telemetry metrics itself)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .router_support import RouterThread, write_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "slmfleet" / "dashboards" / "slmfleet.json"

#: PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "le", "inf", "nan"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression: identifiers that are not functions or
    aggregations (followed by ``(``), not inside label matchers ``{...}``, grouping
    lists ``by (...)``, ranges ``[...]`` or strings, and not keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        word = m.group(0)
        if word.lower() in KEYWORDS or word.startswith("$"):
            continue
        names.add(word)
    return names


def test_metric_names_parser():
    expr = (
        'histogram_quantile(0.95, sum by (le, policy) (rate(a_bucket{policy=~"$p",x="y"}'
        "[$__rate_interval]))) / on (policy) group_left sum without (x) (b_total) * 3600 "
        "+ max(c) offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def exported_sample_names(body: str) -> set[str]:
    names: set[str] = set()
    for fam in text_string_to_metric_families(body):
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names |= {fam.name + "_bucket", fam.name + "_sum", fam.name + "_count"}
        else:
            names.add(fam.name)
        names |= {s.name for s in fam.samples}
    return names


def expressions() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [
        (p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]
    ]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.match(r"label_values\((\w+)", q)
            out.append((var["name"], inner.group(1) if inner else q))
    return out


def test_every_dashboard_query_uses_metrics_the_router_exports(tmp_path):
    config = {
        "version": 1,
        "specialists": [
            {
                "id": "shop/a",
                "endpoint": "127.0.0.1:1",
                "tritonModel": "a",
                "backend": "python",
                "ready": True,
            }
        ],
        "policies": [
            {
                "modelName": "p",
                "id": "shop/p",
                "specialists": ["shop/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
        "budgets": [],
    }
    path = tmp_path / "router.json"
    write_config(path, config)
    with RouterThread(path) as router, urllib.request.urlopen(f"{router.url}/metrics") as r:
        body = r.read().decode()
    exported = exported_sample_names(body)
    assert "slmfleet_router_requests_total" in exported  # the router's own
    assert "slmfleet_router_decisions_dropped_total" in exported  # the telemetry package's
    exprs = expressions()
    assert len(exprs) >= 30
    missing = {
        (title, name)
        for title, expr in exprs
        for name in metric_names(expr)
        if name not in exported
    }
    assert not missing, f"dashboard queries metrics the router does not export: {missing}"
    used = {name for _, expr in exprs for name in metric_names(expr)}
    # The panels the issue asks for are there.
    for needed in (
        "slmfleet_router_requests_total",
        "slmfleet_router_added_latency_seconds_bucket",
        "slmfleet_router_upstream_duration_seconds_bucket",
        "slmfleet_router_escalations_total",
        "slmfleet_router_truncations_total",
        "slmfleet_router_spend_usd",
        "slmfleet_router_budget_exceeded",
        "slmfleet_router_review_open_cases",
        "slmfleet_router_review_sla_breaches_total",
    ):
        assert needed in used, needed
