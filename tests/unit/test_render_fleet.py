"""Fleet -> one router-configuration fragment per object, and policy/budget status."""

import pytest

from slmfleet.api.budget import BudgetSpec
from slmfleet.api.fragments import FRAGMENT_KEY, FRAGMENT_LABEL, MAX_FRAGMENT_BYTES, assemble
from slmfleet.api.policy import RouterPolicySpec
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.render.fleet import MAX_EXAMPLES_BYTES, Invalid, Item, render_fleet
from slmfleet.render.router_objects import RouterTarget, fragment_configmap, secret_reader

# A status endpoint a tenant could write: the renderer must never read it back.
READY = {"conditions": [{"type": "Ready", "status": "True"}], "endpoint": "evil:1"}


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


def test_fragments_assemble_into_the_config_and_carry_their_identity():
    out = render_fleet([specialist("a")], [policy("p", specialists={"names": ["a"]})], [])
    assert set(out.fragments) == {("specialist", "shop/a"), ("policy", "shop/p")}
    target = RouterTarget("sys", "router-config", "router")
    cm = fragment_configmap(out.fragments[("policy", "shop/p")], target, "uid-1")
    assert cm["metadata"]["labels"][FRAGMENT_LABEL] == "router-config"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert cm["metadata"]["name"].startswith("router-config-p-")
    assembled = assemble({cm["metadata"]["name"]: cm["data"][FRAGMENT_KEY]})
    assert [p.id for p in assembled.config.policies] == ["shop/p"]
    assert assembled.rejected == {}


def test_endpoints_are_computed_never_read_back_from_status():
    out = render_fleet([specialist("a")], [policy("p", specialists={"names": ["a"]})], [])
    assert out.config.specialists[0].endpoint == "slm-a.shop.svc:8001"
    assert out.config.specialists[0].triton_model == "a"
    (target,) = out.policy_status["shop/p"]["resolvedTargets"]
    assert target["endpoint"] == "slm-a.shop.svc:8001"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "ExamplesNotFound"),
        ("x\n" * (MAX_EXAMPLES_BYTES // 2 + 1), "ExamplesTooLarge"),
        ("y" * 2000 + "\n", "ExamplesTooLarge"),
    ],
)
def test_a_specialist_with_broken_examples_is_left_out_alone(text, reason):
    bad = specialist("bad", examplesFrom={"name": "ex", "key": "lines"})
    out = render_fleet(
        [specialist("good"), bad],
        [policy("p", specialists={"names": ["good", "bad"]})],
        [],
        {("shop", "ex", "lines"): text},
    )
    assert out.specialist_problems["shop/bad"].reason == reason
    assert [s.id for s in out.config.specialists] == ["shop/good"]
    # The policy is still served, routing to the good one, and says why bad is not there.
    assert out.config.policies[0].specialists == ["shop/bad", "shop/good"]  # router skips bad
    assert conds(out.policy_status["shop/p"])["Ready"]["reason"] == "TargetsNotReady"


def test_a_policy_too_large_for_its_fragment_is_left_out_alone():
    examples = ["z" * 1000] * 1000  # ~1 MB of out-of-domain examples
    out = render_fleet(
        [specialist("a")],
        [
            policy(
                "huge",
                specialists={"names": ["a"]},
                routing={"semantic": {"outOfDomainExamples": examples}},
            ),
            policy("small", specialists={"names": ["a"]}),
        ],
        [],
    )
    assert [p.id for p in out.config.policies] == ["shop/small"]
    ready = conds(out.policy_status["shop/huge"])["Ready"]
    assert ready["reason"] == "RouterConfigTooLarge" and str(MAX_FRAGMENT_BYTES) in ready["message"]
    assert conds(out.policy_status["shop/small"])["Ready"]["status"] == "True"


def test_invalid_objects_get_a_condition_and_nothing_else_changes():
    out = render_fleet(
        [specialist("a")],
        [policy("p", specialists={"names": ["a"]})],
        [],
        invalid=[Invalid("RouterPolicy", "shop", "bad", 3, "spec.x: not RE2")],
    )
    ready = conds(out.policy_status["shop/bad"])["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "not RE2" in ready["message"]
    assert [p.id for p in out.config.policies] == ["shop/p"]


def render_two_namespaces(*, other_has_secret: bool):
    """Policies p (shop) and q (other), each with an external tier whose API key is the
    Secret ``llm`` of its own namespace (present in shop; in other as asked)."""
    tiers = [
        {"name": "small", "routed": True},
        {"name": "big", "external": {"baseUrl": "https://api.example.com/v1", "model": "m",
                                     "apiKey": {"name": "llm", "key": "token"}}},
    ]  # fmt: skip
    return render_fleet(
        [specialist("a"), specialist("a", ns="other")],
        [
            policy("p", specialists={"names": ["a"]}, cascade=tiers),
            policy("q", ns="other", modelName="q", specialists={"names": ["a"]}, cascade=tiers),
        ],
        [],
        secrets={("shop", "llm"): True, ("other", "llm"): other_has_secret},
    )


def test_secret_references_resolve_in_the_policys_namespace_and_are_granted_there():
    out = render_two_namespaces(other_has_secret=False)
    by_id = {p.id: p for p in out.config.policies}
    assert by_id["shop/p"].cascade[1].external.api_key.namespace == "shop"
    assert by_id["other/q"].cascade[1].external.api_key.namespace == "other"
    assert out.secret_grants == {"shop": ["llm"], "other": ["llm"]}
    assert conds(out.policy_status["shop/p"])["Ready"]["status"] == "True"
    missing = conds(out.policy_status["other/q"])["Ready"]
    assert missing["reason"] == "SecretNotFound"
    assert "spec.cascade[1].external.apiKey" in missing["message"]
    role, binding = secret_reader("shop", ["llm"], RouterTarget("sys", "cfg", "router"))
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["llm"], "verbs": ["get"]}
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "router", "namespace": "sys"}]
    assert secret_reader("shop", [], RouterTarget("sys", "cfg", "router"))[0]["rules"] == []


def test_a_name_conflict_keeps_the_older_policy_across_namespaces():
    out = render_fleet(
        [specialist("a"), specialist("a", ns="team-b")],
        [
            policy(
                "mine",
                ns="team-b",
                created="2026-03-01T00:00:00Z",
                modelName="shared",
                specialists={"names": ["a"]},
            ),
            policy(
                "first",
                created="2026-01-01T00:00:00Z",
                modelName="shared",
                specialists={"names": ["a"]},
            ),
        ],
        [],
    )
    assert [p.id for p in out.config.policies] == ["shop/first"]
    later = conds(out.policy_status["team-b/mine"])["Ready"]
    assert later["reason"] == "ModelNameConflict" and "shop/first" in later["message"]
    # Specialists stay addressable by their namespaced id, whatever policies are named.
    assert {s.id for s in out.config.specialists} == {"shop/a", "team-b/a"}


def test_rendering_is_deterministic():
    args = (
        [specialist("b"), specialist("a")],
        [policy("p", specialists={"names": ["a", "b"]})],
        [budget("x", perRequest={"maxOutputTokens": 5})],
    )
    one = render_fleet(*args).config.model_dump_json()
    two = render_fleet(*[list(reversed(a)) for a in args]).config.model_dump_json()
    assert one == two


def _status(ready: str, reason: str, scaling: str | None = None) -> dict:
    conditions = [{"type": "Ready", "status": ready, "reason": reason}]
    if scaling:
        conditions.append({"type": "Scaling", "status": "True", "reason": scaling})
    return {"conditions": conditions}


@pytest.mark.parametrize(
    ("status", "ready", "scaled_to_zero", "capped", "policy_ready"),
    [
        (_status("True", "Available"), True, False, False, "True"),
        (_status("False", "ScaledToZero"), False, True, False, "True"),
        (_status("False", "ScalingFromZero"), False, True, False, "True"),
        (_status("False", "ReplicasUnavailable"), False, False, False, "False"),
        (_status("True", "Available", scaling="CostCapped"), True, False, True, "True"),
        (_status("True", "Available", scaling="WithinTarget"), True, False, False, "True"),
    ],
)
def test_scaled_to_zero_and_cost_capped_reach_the_router(
    status, ready, scaled_to_zero, capped, policy_ready
):
    """Zero replicas is not Ready (never routed to zero Pods) but is routable: the
    router holds or cascades, and the policy serving it stays Ready."""
    spec = SLMSpecialistSpec.model_validate(
        {"model": {"uri": "hf://o/m", "backend": "vllm"}, "slo": {"targetInFlight": 3}}
    )
    out = render_fleet(
        [Item("shop", "a", spec, 1, {}, status)],
        [policy("p", specialists={"names": ["a"]}, capacity={"whenScaledToZero": "cascade"})],
        [],
    )
    (cfg,) = out.config.specialists
    assert (cfg.ready, cfg.scaled_to_zero, cfg.cost_capped) == (ready, scaled_to_zero, capped)
    assert cfg.target_in_flight == 3
    assert out.config.policies[0].capacity.when_scaled_to_zero == "cascade"
    pstatus = out.policy_status["shop/p"]
    assert conds(pstatus)["Ready"]["status"] == policy_ready
    (target,) = pstatus["resolvedTargets"]
    assert target.get("scaledToZero", False) == scaled_to_zero
    if scaled_to_zero:
        assert "scaled to zero" in conds(pstatus)["Ready"]["message"]


def test_an_object_whose_render_fails_is_reported_alone_and_the_rest_render():
    """A spec the renderer trips on (here one that bypassed validation) fails that
    object only, said on its own status; every other object renders as before."""
    broken = Item("shop", "broken", RouterPolicySpec.model_construct(), 4)
    broken_spec = Item("shop", "odd", SLMSpecialistSpec.model_construct(), 1, {}, READY)
    broken_budget = Item("shop", "odd", BudgetSpec.model_construct(applies_to=object()), 2)
    out = render_fleet(
        [specialist("billing"), broken_spec],
        [broken, policy("support", specialists={"names": ["billing"]})],
        [broken_budget, budget("cap", spend=[{"window": "1h", "limitUsd": 5}])],
    )
    (pol,) = out.config.policies
    assert pol.id == "shop/support" and pol.specialists == ["shop/billing"]
    assert [s.id for s in out.config.specialists] == ["shop/billing"]
    assert [b.id for b in out.config.budgets] == ["shop/cap"]
    for status in (out.policy_status["shop/broken"], out.budget_status["shop/odd"]):
        ready = conds(status)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "RenderError")
        assert "AttributeError" in ready["message"]
    assert out.specialist_problems["shop/odd"].reason == "RenderError"
    assert conds(out.policy_status["shop/support"])["Ready"]["status"] == "True"


def test_a_policy_whose_render_fails_late_is_served_nowhere_and_grants_nothing(monkeypatch):
    """The failure comes after the policy's fragment and Secret references are known
    (its rollout condition): nothing of it may stay, least of all a Secret grant."""
    import slmfleet.render.fleet as fleet

    real = fleet.rollout_condition

    def trips(spec, namespace, *args):
        if namespace == "other":
            raise RuntimeError("boom")
        return real(spec, namespace, *args)

    monkeypatch.setattr(fleet, "rollout_condition", trips)
    out = render_two_namespaces(other_has_secret=True)
    assert [p.id for p in out.config.policies] == ["shop/p"]
    assert out.secret_grants == {"shop": ["llm"]}
    assert conds(out.policy_status["other/q"])["Ready"]["reason"] == "RenderError"
