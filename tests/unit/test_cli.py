"""The ``slmfleet`` command's pure parts: arguments, the printed snippets, the status table."""

from __future__ import annotations

import ast
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from slmfleet.cli import cluster as C
from slmfleet.cli import main as M
from slmfleet.local.fleet import load_fleet

REPO = Path(__file__).resolve().parents[2]
RETAIL = REPO / "examples" / "retail-support"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    args = M.build_parser().parse_args(list(argv))
    say = M.Console(out)
    handler = {"validate": M.cmd_validate, "standins": M.cmd_standins, "crds": M.cmd_crds}
    return handler[args.command](args, say), out.getvalue()


def test_parser_defaults_and_flags():
    args = M.build_parser().parse_args(["up", "examples/retail-support"])
    assert (args.port, args.host, args.cluster, args.namespace) == (8080, "127.0.0.1", False, None)
    args = M.build_parser().parse_args(["up", "--cluster", "x", "--port", "9000"])
    assert args.cluster and args.port == 9000 and args.path == "x"
    with pytest.raises(SystemExit):
        M.build_parser().parse_args([])


def test_redis_flag_picks_the_ledger_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    parse = M.build_parser().parse_args
    assert M.ledger_dir(parse(["up", "examples/retail-support"])) is None  # in-process
    default = M.ledger_dir(parse(["up", "--redis", "examples/retail-support"]))
    assert default == tmp_path / ".cache" / "slmfleet" / "ledger" / "retail-support"
    named = parse(["up", "--redis", "--namespace", "shop", "x"])
    assert M.ledger_dir(named).name == "shop"
    chosen = parse(["up", "--redis", "--redis-dir", str(tmp_path / "l"), "x"])
    assert M.ledger_dir(chosen) == tmp_path / "l"


def test_usage_text_is_runnable_python_and_curl():
    text = M.usage_text("http://127.0.0.1:8080/v1", "retail-support", 'where\'s my "parcel"?')
    python = "\n".join(
        line[4:] for line in text.split("or with curl")[0].splitlines() if line.startswith("    ")
    )
    ast.parse(python)  # pastes into a Python prompt as is
    assert 'model="retail-support"' in python and 'base_url="http://127.0.0.1:8080/v1"' in python
    curl = text.split("or with curl")[1]
    command = " ".join(
        line.strip().rstrip("\\") for line in curl.splitlines() if line.startswith("    ")
    )
    argv = shlex.split(command)
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["messages"][0]["content"] == 'where\'s my "parcel"?'
    assert argv[2] == "http://127.0.0.1:8080/v1/chat/completions"


def test_sample_question_comes_from_a_routed_specialist():
    fleet = load_fleet(RETAIL)
    question = M.sample_question(fleet)
    owners = [s.name for s in fleet.specialists if question in s.spec.domain.examples]
    assert owners and owners[0] not in ("generalist", "order-lookup")


def test_request_line():
    line = M.request_line(
        {
            "policy": "retail-support",
            "route": "retail-support/returns",
            "route_source": "rule:refunds",
            "confidence": 1.0,
            "tier": "generalist",
            "target": "retail-support/generalist",
            "escalations": ["specialist:label_threshold:refund"],
            "status": 200,
            "duration_ms": 41.6,
        }
    )
    assert "route=retail-support/returns (rule:refunds 1.0)" in line
    assert "escalations=specialist:label_threshold:refund" in line and line.endswith("42ms")


def test_validate_and_standins_commands(tmp_path):
    code, out = run("validate", str(RETAIL))
    assert code == 0 and out.rstrip().endswith("valid")
    assert "model retail-support: 6 specialists; cascade specialist -> generalist -> human" in out
    code, out = run("standins", str(tmp_path), str(RETAIL))
    assert code == 0 and (tmp_path / "retail" / "orders" / "model.py").is_file()
    code, out = run("validate", str(tmp_path / "missing"))
    assert code == 2 and "no such file" in out


def test_crds_command_prints_every_crd():
    code, out = run("crds")
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert code == 0
    assert sorted(d["spec"]["names"]["kind"] for d in docs) == [
        "Budget",
        "RouterPolicy",
        "SLMPool",
        "SLMSpecialist",
    ]


def _obj(kind, name, gen=1, observed=1, ready=None, reason="R", message=""):
    status = {"observedGeneration": observed} if observed is not None else {}
    if ready is not None:
        status["conditions"] = [
            {"type": "Ready", "status": ready, "reason": reason, "message": message}
        ]
    return {"kind": kind, "metadata": {"name": name, "generation": gen}, "status": status}


def test_status_rows():
    assert C.row_of(_obj("SLMSpecialist", "a", ready="True"))[4] is True
    assert C.row_of(_obj("SLMSpecialist", "a", gen=2, ready="True"))[1] == "True*"  # stale
    assert C.row_of(_obj("SLMSpecialist", "a", gen=2, ready="True"))[4] is False
    assert C.row_of(_obj("Budget", "b", observed=None))[1:3] == ("-", "Pending")
    lines = C.render_table(
        [
            _obj("SLMSpecialist", "orders", ready="True", reason="Available"),
            _obj("RouterPolicy", "p", ready="False", reason="TargetsNotReady", message="x\ny"),
        ]
    )
    assert lines[0].split() == ["RESOURCE", "READY", "REASON", "MESSAGE"]
    assert re.match(r"\s+slm/orders\s+True\s+Available", lines[1])
    assert lines[2].rstrip().endswith("x y")


def test_persistent_volumes_bind_the_fleet_claims(tmp_path):
    pvs = C.persistent_volumes(RETAIL, "retail-support", tmp_path)
    assert len(pvs) == 1
    spec = pvs[0]["spec"]
    assert spec["claimRef"] == {"namespace": "retail-support", "name": "slmfleet-models"}
    assert spec["accessModes"] == ["ReadWriteMany"] and spec["capacity"] == {"storage": "1Gi"}
    assert spec["hostPath"]["path"] == str(tmp_path / "slmfleet-models")
