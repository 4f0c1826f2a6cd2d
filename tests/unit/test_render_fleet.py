"""Fleet -> router configuration and policy/budget status."""

from slmfleet.api.budget import BudgetSpec
from slmfleet.api.policy import RouterPolicySpec
from slmfleet.api.routerconfig import CONFIG_KEY, RouterConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.render.fleet import Item, render_fleet, router_configmap

READY = {"conditions": [{"type": "Ready", "status": "True"}], "endpoint": "e:8001"}


def specialist(name, ns="shop", ready=True, labels=None, **domain):
    spec = SLMSpecialistSpec.model_validate(
        {"model": {"uri": "hf://o/m", "backend": "vllm"}, "domain": domain}
    )
    return Item(ns, name, spec, 1, labels or {}, READY if ready else {})


def policy(name, ns="shop", created="2026-01-01T00:00:00Z", **spec):
    return Item(ns, name, RouterPolicySpec.model_validate(spec), 4, created=created)


def budget(name, ns="shop", **spec):
    return Item(ns, name, BudgetSpec.model_validate(spec), 2)


def conds(status):
    return {c["type"]: c for c in status["conditions"]}


def test_names_resolve_to_ids_everywhere():
    out = render_fleet(
        [specialist("billing"), specialist("big")],
        [
            policy(
                "support",
                specialists={"names": ["billing"]},
                routing={"rules": [{"name": "r", "keywords": ["refund"], "specialist": "billing"}]},
                cascade=[{"name": "small", "routed": True}, {"name": "large", "specialist": "big"}],
            )
        ],
        [],
    )
    (pol,) = out.config.policies
    assert pol.model_name == "support"
    assert pol.specialists == ["shop/billing"]
    assert pol.routing.rules[0].specialist == "shop/billing"
    assert pol.cascade[1].specialist == "shop/big"
    status = out.policy_status["shop/support"]
    assert conds(status)["Ready"]["status"] == "True"
    assert {t["name"] for t in status["resolvedTargets"]} == {"billing", "big"}
    assert status["observedGeneration"] == 4


def test_selector_picks_labelled_specialists_in_the_namespace_only():
    out = render_fleet(
        [
            specialist("a", labels={"team": "x"}),
            specialist("b", labels={"team": "y"}),
            specialist("c", ns="other", labels={"team": "x"}),
        ],
        [policy("p", specialists={"selector": {"matchLabels": {"team": "x"}}})],
        [],
    )
    assert out.config.policies[0].specialists == ["shop/a"]


def test_missing_and_unready_targets_are_reported():
    out = render_fleet(
        [specialist("a", ready=False)],
        [policy("p", specialists={"names": ["a", "ghost"]})],
        [],
    )
    ready = conds(out.policy_status["shop/p"])
    assert ready["Ready"]["reason"] == "TargetsNotFound"
    assert "ghost" in ready["Ready"]["message"]
    assert ready["Stalled"]["status"] == "True"
    out = render_fleet(
        [specialist("a", ready=False)], [policy("p", specialists={"names": ["a"]})], []
    )
    ready = conds(out.policy_status["shop/p"])
    assert ready["Ready"]["reason"] == "TargetsNotReady"
    assert ready["Reconciling"]["status"] == "True"
    assert out.config.policies[0].specialists == ["shop/a"]
    assert out.config.specialists[0].ready is False


def test_model_name_conflict_oldest_wins():
    out = render_fleet(
        [specialist("a")],
        [
            policy(
                "new", created="2026-02-01T00:00:00Z", modelName="m", specialists={"names": ["a"]}
            ),
            policy(
                "old", created="2026-01-01T00:00:00Z", modelName="m", specialists={"names": ["a"]}
            ),
        ],
        [],
    )
    assert [p.id for p in out.config.policies] == ["shop/old"]
    assert conds(out.policy_status["shop/new"])["Ready"]["reason"] == "ModelNameConflict"


def test_budgets_apply_by_scope():
    out = render_fleet(
        [specialist("a"), specialist("b")],
        [
            policy("p1", specialists={"names": ["a"]}),
            policy("p2", specialists={"names": ["b"]}),
        ],
        [
            budget("everything", perRequest={"maxReasoningTokens": 100}),
            budget(
                "only-p1", appliesTo={"policies": ["p1"]}, spend=[{"window": "1h", "limitUsd": 5}]
            ),
            budget("via-b", appliesTo={"specialists": ["b"]}, perRequest={"maxOutputTokens": 9}),
            budget("elsewhere", ns="other", perRequest={"maxOutputTokens": 1}),
        ],
    )
    by_name = {p.model_name: p.budgets for p in out.config.policies}
    assert by_name == {
        "p1": ["shop/everything", "shop/only-p1"],
        "p2": ["shop/everything", "shop/via-b"],
    }
    assert out.budget_status["shop/only-p1"]["policies"] == ["p1"]
    assert conds(out.budget_status["shop/everything"])["Ready"]["status"] == "True"
    assert out.budget_status["other/elsewhere"]["policies"] == []
    # Specialists called directly (model "ns/name") are covered too: an unscoped budget
    # takes the whole namespace, a scoped one only the specialists it names.
    specialists = {b.id: b.specialists for b in out.config.budgets}
    assert specialists["shop/everything"] == ["shop/a", "shop/b"]
    assert specialists["shop/only-p1"] == []
    assert specialists["shop/via-b"] == ["shop/b"]
    assert specialists["other/elsewhere"] == []


def test_examples_from_configmap_are_merged():
    item = specialist("a", examples=["inline one"], examplesFrom={"name": "ex", "key": "lines"})
    out = render_fleet([item], [], [], {("shop", "ex", "lines"): "first\n\n second \n"})
    assert out.config.specialists[0].domain.examples == ["inline one", "first", "second"]


def test_configmap_round_trips_through_the_shared_model():
    out = render_fleet([specialist("a")], [policy("p", specialists={"names": ["a"]})], [])
    cm = router_configmap(out.config, "sys", "router")
    parsed = RouterConfig.model_validate_json(cm["data"][CONFIG_KEY])
    assert parsed == out.config
    assert cm["metadata"] == {
        "name": "router",
        "namespace": "sys",
        "labels": cm["metadata"]["labels"],
    }


def test_rendering_is_deterministic():
    args = (
        [specialist("b"), specialist("a")],
        [policy("p", specialists={"names": ["a", "b"]})],
        [budget("x", perRequest={"maxOutputTokens": 5})],
    )
    one = render_fleet(*args).config.model_dump_json()
    two = render_fleet(*[list(reversed(a)) for a in args]).config.model_dump_json()
    assert one == two
