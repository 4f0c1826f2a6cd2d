"""RouterPolicy rollouts: names resolve to ids in the router config, the Rollout
condition names the field of a rollout that cannot run, and the API refuses bad ones."""

import pytest
from pydantic import ValidationError

from slmfleet.api.policy import RouterPolicySpec
from slmfleet.render.fleet import render_fleet
from tests.unit.test_render_fleet import conds, policy, specialist


def rollout_policy(*rollouts, **spec):
    return policy(
        "support",
        specialists={"names": ["billing", "shipping"]},
        rollouts=list(rollouts),
        **spec,
    )


FLEET = [
    specialist("billing"),
    specialist("shipping"),
    specialist("billing-v2"),
    specialist("billing-v3", ready=False),
]


def test_rollouts_resolve_to_ids():
    out = render_fleet(
        FLEET,
        [rollout_policy(
            {"specialist": "billing", "candidate": "billing-v2", "percent": 10},
            {"specialist": "shipping", "candidate": "billing-v2", "mode": "shadow",
             "percent": 100, "rollback": {"minSamples": 20}},
        )],
        [],
    )  # fmt: skip
    (pol,) = out.config.policies
    canary, shadow = pol.rollouts
    assert (canary.specialist, canary.candidate, canary.mode) == (
        "shop/billing",
        "shop/billing-v2",
        "canary",
    )
    assert canary.percent == 10 and canary.rollback.min_samples == 50  # the default
    assert (shadow.mode, shadow.rollback.min_samples) == ("shadow", 20)
    # The candidate is served as a specialist of the configuration, not a target.
    assert "shop/billing-v2" in {s.id for s in out.config.specialists}
    assert pol.specialists == ["shop/billing", "shop/shipping"]
    rollout = conds(out.policy_status["shop/support"])["Rollout"]
    assert (rollout["status"], rollout["reason"]) == ("True", "RolloutsActive")
    assert rollout["message"] == (
        "canary billing -> billing-v2 at 10%, shadow shipping -> billing-v2 at 100%"
    )


@pytest.mark.parametrize(
    ("rollout", "reason", "message"),
    [
        ({"specialist": "billing", "candidate": "billing-v9", "percent": 5},
         "CandidateNotFound",
         "spec.rollouts[0].candidate: SLMSpecialist 'billing-v9' not found in namespace shop"),
        ({"specialist": "billing", "candidate": "billing-v3", "percent": 5},
         "CandidateNotReady",
         "spec.rollouts[0].candidate: SLMSpecialist 'billing-v3' is not Ready"),
        ({"specialist": "account", "candidate": "billing-v2", "percent": 5},
         "IncumbentNotRouted",
         "spec.rollouts[0].specialist: 'account' is not one of the policy's specialists"),
    ],
)  # fmt: skip
def test_a_rollout_that_cannot_run_is_a_condition_naming_the_field(rollout, reason, message):
    out = render_fleet(FLEET, [rollout_policy(rollout)], [])
    status = conds(out.policy_status["shop/support"])
    assert status["Rollout"]["status"] == "False" and status["Rollout"]["reason"] == reason
    assert status["Rollout"]["message"].startswith(message)
    assert status["Ready"]["status"] == "True"  # the incumbent keeps serving
    assert len(out.config.policies) == 1


def test_no_rollouts_is_a_true_condition():
    out = render_fleet(FLEET, [rollout_policy()], [])
    rollout = conds(out.policy_status["shop/support"])["Rollout"]
    assert (rollout["status"], rollout["reason"]) == ("True", "NoRollouts")


@pytest.mark.parametrize(
    ("rollouts", "field"),
    [
        ([{"specialist": "a", "candidate": "b", "percent": 101}], "percent"),
        ([{"specialist": "a", "candidate": "b", "percent": -1}], "percent"),
        ([{"specialist": "a", "candidate": "b"}], "percent"),
        ([{"specialist": "a", "candidate": "b", "percent": 5, "mode": "blue"}], "mode"),
        ([{"specialist": "a", "candidate": "b", "percent": 5,
           "rollback": {"minSamples": 1}}], "minSamples"),
        ([{"specialist": "a", "candidate": "b", "percent": 5,
           "rollback": {"confidence": 1.0}}], "confidence"),
    ],
)  # fmt: skip
def test_the_models_refuse_bad_rollouts(rollouts, field):
    with pytest.raises(ValidationError) as err:
        RouterPolicySpec.model_validate({"specialists": {"names": ["a"]}, "rollouts": rollouts})
    assert field in str(err.value)
