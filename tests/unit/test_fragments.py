"""Assembling the router configuration: each fragment stands or falls alone, and none can
reach outside its namespace."""

from __future__ import annotations

import time

import orjson
import pytest

from slmfleet.api.fragments import Fragment, assemble, fragment_name
from slmfleet.api.schemacheck import MAX_SCHEMA_BYTES, schema_problems
from slmfleet.router.source import assemble_bytes


def spec_frag(ns: str, name: str) -> dict:
    return {
        "kind": "specialist",
        "id": f"{ns}/{name}",
        "specialist": {"id": f"{ns}/{name}", "endpoint": f"slm-{name}.{ns}.svc:8001",
                       "tritonModel": name, "backend": "python", "ready": True},
    }  # fmt: skip


def pol_frag(ns: str, name: str, model: str, *, created: str = "", **extra) -> dict:
    policy = {
        "modelName": model,
        "id": f"{ns}/{name}",
        "specialists": [f"{ns}/a"],
        "cascade": [{"name": "routed", "routed": True}],
        **extra,
    }
    return {"kind": "policy", "id": f"{ns}/{name}", "created": created, "policy": policy}


def ref_bomb(depth: int) -> dict:
    """The reviewer's schema: each definition references the next one twice, so the
    validator evaluates 2**depth subschemas per answer from ~2 KB of JSON."""
    defs = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(depth)
    }
    defs[f"d{depth}"] = {"type": "object"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def ref_chain(length: int, *, reverse: bool = False) -> dict:
    """A chain of single references: small, but as deep as it is long when expanded
    (written in reverse, every definition is met at the top level before its user)."""
    order = range(length, -1, -1) if reverse else range(length + 1)
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} if i < length else {} for i in order}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def raw(frag: dict) -> bytes:
    return orjson.dumps(frag)


def test_valid_fragments_assemble_and_the_order_does_not_matter():
    frags = {"c1": raw(spec_frag("a", "a")), "c2": raw(pol_frag("a", "p", "p"))}
    one = assemble(frags)
    two = assemble(dict(reversed(list(frags.items()))))
    assert one.rejected == {} and one.config == two.config
    assert [p.model_name for p in one.config.policies] == ["p"]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b"{not json", "invalid"),
        (raw({**pol_frag("a", "q", "q"), "id": "a/other"}), "holds a/q, not a/other"),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    routing={"rules": [{"name": "r", "regex": "(?=x)", "specialist": "a/a"}]},
                )
            ),
            "RE2",
        ),
        (raw(pol_frag("a", "q", "q", specialists=["b/a"])), "outside its namespace"),
        (raw(pol_frag("a", "q", "q", budgets=["b/all"])), "outside its namespace"),
        (
            raw(pol_frag("a", "q", "q", cascade=[{"name": "x", "specialist": "b/big"}])),
            "outside its namespace",
        ),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    cascade=[
                        {
                            "name": "x",
                            "external": {
                                "baseUrl": "https://h/v1",
                                "model": "m",
                                "apiKey": {"namespace": "b", "name": "llm", "key": "k"},
                            },
                        }
                    ],
                )
            ),
            "Secret outside",
        ),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    cascade=[
                        {
                            "name": "x",
                            "routed": True,
                            "accept": {
                                "validators": [
                                    {"name": "v", "jsonSchema": {"$ref": "http://evil/x"}}
                                ]
                            },
                        }
                    ],
                )
            ),
            "local references",
        ),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    cascade=[
                        {
                            "name": "x",
                            "routed": True,
                            "accept": {"validators": [{"name": "v", "jsonSchema": ref_bomb(30)}]},
                        }
                    ],
                )
            ),
            "through $ref",
        ),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    rollouts=[{"specialist": "a/a", "candidate": "b/x", "percent": 10}],
                )
            ),
            "b/x outside",
        ),
        (
            raw(
                pol_frag(
                    "a",
                    "q",
                    "q",
                    rollouts=[{"specialist": "b/a", "candidate": "a/a", "percent": 10}],
                )
            ),
            "b/a outside",
        ),
        (raw(pol_frag("a", "q", "b/a")), "modelName"),
        (raw({"kind": "policy", "id": "a/q"}), "without its policy"),
    ],
)
def test_one_bad_fragment_is_left_out_and_the_rest_is_served(bad, why):
    frags = {"good-s": raw(spec_frag("a", "a")), "good-p": raw(pol_frag("a", "p", "p")),
             "bad": bad}  # fmt: skip
    out = assemble(frags)
    assert set(out.rejected) == {"bad"}
    assert why in out.rejected["bad"], out.rejected["bad"]
    assert [p.id for p in out.config.policies] == ["a/p"]
    assert [s.id for s in out.config.specialists] == ["a/a"]


def test_a_contested_model_name_stays_with_the_older_policy():
    frags = {
        "x": raw(pol_frag("team-b", "late", "shared", created="2026-02-01T00:00:00Z")),
        "y": raw(pol_frag("team-a", "early", "shared", created="2026-01-01T00:00:00Z")),
    }
    out = assemble(frags)
    assert [p.id for p in out.config.policies] == ["team-a/early"]
    assert "already served by team-a/early" in out.rejected["x"]


def test_a_duplicated_object_is_served_once():
    out = assemble({"one": raw(spec_frag("a", "a")), "two": raw(spec_frag("a", "a"))})
    assert len(out.config.specialists) == 1 and set(out.rejected) == {"two"}


def test_fragment_names_are_bounded_and_hide_user_text():
    name = fragment_name("slmfleet-router-config", "policy", "n" * 63 + "/" + "p" * 253)
    assert len(name) <= 253 and "nnn" not in name
    assert name == fragment_name("slmfleet-router-config", "policy", "n" * 63 + "/" + "p" * 253)
    assert name != fragment_name("slmfleet-router-config", "specialist", "n" * 63 + "/p")


def test_source_assembly_logs_each_rejection_once(caplog):
    reported: dict[str, str] = {}
    frags = {"ok": raw(spec_frag("a", "a")).decode(), "bad": "{"}
    caplog.set_level("ERROR", logger="slmfleet.router")
    config = orjson.loads(assemble_bytes(frags, reported))
    assemble_bytes(frags, reported)
    assert [s["id"] for s in config["specialists"]] == ["a/a"]
    assert sum("bad" in r.getMessage() for r in caplog.records) == 1


def test_fragment_encoding_round_trips():
    frag = Fragment.model_validate(pol_frag("a", "p", "p"))
    assert Fragment.model_validate_json(frag.encode()) == frag


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "https://example.com/x"}, "local references"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "local references"),
        ({"$dynamicRef": "http://x"}, "local references"),
        ({"$dynamicRef": "#meta"}, "not supported"),
        ({"$recursiveRef": "#"}, "not supported"),
        ({"$defs": {"a": {"$anchor": "a"}}, "$ref": "#a"}, "JSON-pointer"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}, "recursive"),
        ({"properties": {"next": {"$ref": "#"}}}, "recursive"),
        (ref_bomb(30), "through $ref"),  # too deep as well as too wide
        (ref_bomb(12), "expands the schema past"),
        (ref_chain(80), "levels through $ref"),
        (ref_chain(80, reverse=True), "levels through $ref"),
        ({"$id": "https://evil/", "$ref": "#/$defs/a"}, "$id"),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "only https"),
        ({"properties": {"a": {"pattern": "(?=x)"}}}, "RE2"),
        ({"patternProperties": {"^a": {}}}, "not supported"),
        ({"type": "object", "description": "x" * MAX_SCHEMA_BYTES}, "bytes"),
        ({"type": "nonsense"}, "not a valid JSON Schema"),
    ],
)
def test_validator_schemas_that_are_refused(schema, problem):
    problems = schema_problems(schema)
    assert problems and problem in problems[0], problems


def test_deep_schemas_are_refused_and_ordinary_ones_pass():
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["items"] = {}
        node = node["items"]
    assert "nested deeper" in schema_problems(deep)[0]
    ok = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["order_id"],
        "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4,}$"}},
        "propertyNames": {"pattern": "^[a-z_]+$"},
        "$defs": {"a": {"type": "string"}},
        "additionalProperties": {"$ref": "#/$defs/a"},
    }
    assert schema_problems(ok) == []


def test_references_within_the_expansion_bound_pass_and_validate_fast():
    """Shared definitions used many times are fine while their expansion is bounded;
    the largest admitted doubling chain validates an answer in milliseconds."""
    from slmfleet.router.validators import compile_json_schema

    assert schema_problems(ref_chain(40)) == []
    assert schema_problems(ref_chain(40, reverse=True)) == []
    assert schema_problems(ref_bomb(8)) == []  # ~5 x 2**8 objects expanded: admitted
    assert schema_problems(ref_bomb(10))  # ~5 x 2**10: refused
    check = compile_json_schema(ref_bomb(8))
    started = time.perf_counter()
    assert check.is_valid({"a": 1})
    assert time.perf_counter() - started < 1.0  # measured ~0.03 s; 2**30 would be hours


def test_a_replica_price_is_the_autoscalers_not_the_routers():
    """The router never reads cost.replicaHourUsd: it is not in the fragment; one that an
    older operator wrote with it still assembles (dropped), so an upgrade loses nothing."""
    from slmfleet.api.specialist import SLMSpecialistSpec
    from slmfleet.render.translate import specialist_config

    spec = SLMSpecialistSpec.model_validate(
        {
            "model": {"backend": "python", "uri": "hf://org/m"},
            "cost": {"replicaHourUsd": 1.5, "inputPerMillionUsd": 0.2, "outputPerMillionUsd": 0.4},
        }
    )
    cfg = specialist_config("a", "a", spec, ready=True, extra_examples=[])
    assert cfg.cost.wire() == {"inputPerMillionUsd": 0.2, "outputPerMillionUsd": 0.4}
    old = spec_frag("a", "a")
    old["specialist"]["cost"] = {"replicaHourUsd": 1.5, "inputPerMillionUsd": 0.2}
    got = assemble({"c1": raw(old)})
    assert got.rejected == {}
    assert got.config.specialists[0].cost.input_per_million_usd == 0.2


def test_a_budget_attaches_only_by_the_policys_own_budget_ids():
    """A Budget fragment names policies by model name (no namespace); the router used
    to attach any Budget naming a policy's model, so a forged fragment in team b (or a
    stale one while a model name changes owner) charged or rejected team a's requests.
    Only the policy's own ``budgets`` ids (confined to its namespace) attach now."""
    from slmfleet.router.snapshot import build_snapshot

    def budget(ident: str, **extra) -> bytes:
        spend = [{"window": "1h", "limitUsd": 0.01, "action": "reject"}]
        return raw({"kind": "budget", "id": ident,
                    "budget": {"id": ident, "spend": spend, **extra}})  # fmt: skip

    frags = {
        "s": raw(spec_frag("a", "a")),
        "p": raw(pol_frag("a", "p", "p", budgets=["a/mine"])),
        "mine": budget("a/mine", policies=["p"]),
        "forged": budget("b/evil", policies=["p"]),
        "stale": budget("a/stale", policies=["p"]),
    }
    out = assemble(frags)
    assert out.rejected == {}
    snap = build_snapshot(out.config)
    assert [b.id for b in snap.policies["p"].budgets] == ["a/mine"]
