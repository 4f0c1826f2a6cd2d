"""The RouterPolicy fields telemetry added work end to end in the API's pure part: the
decision log's content setting and the human tier's answer mode are translated into
the router configuration as written, and a wait that cannot fit in its tier's time is
refused (the CRD's CEL rule refuses it on the API server: tests/integration/invalid)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slmfleet.api.policy import RouterPolicySpec
from slmfleet.api.routerconfig import RouterConfig, TierConfig
from slmfleet.render.translate import policy_config
from slmfleet.router.snapshot import build_snapshot
from slmfleet.telemetry.settings import ContentPolicy, HumanAnswerPolicy

SPEC = {
    "specialists": {"names": ["a"]},
    "decisionLog": {"content": "hashed"},
    "cascade": [
        {"name": "small", "routed": True},
        {
            "name": "review",
            "human": {"queue": "tier2", "mode": "wait", "waitSeconds": 20, "onTimeout": "async"},
            "timeoutMs": 25000,
        },
    ],
}


def test_fields_reach_the_router_configuration_and_snapshot():
    spec = RouterPolicySpec.model_validate(SPEC)
    cfg = policy_config("shop", "p", spec, model_name="p", specialists=["shop/a"], budgets=[])
    assert cfg.decision_log == ContentPolicy(content="hashed", max_chars=4096)
    human = cfg.cascade[1].human
    assert isinstance(human, HumanAnswerPolicy)  # one type: the telemetry package uses it
    assert (human.mode, human.wait_seconds, human.on_timeout) == ("wait", 20, "async")
    assert "{case_id}" in human.message  # the default names the case
    snap = build_snapshot(
        RouterConfig(policies=[cfg], specialists=[]), classifier_factory=lambda d: None
    )
    assert snap.policies["p"].decision_log.content == "hashed"


def test_no_decision_log_means_the_routers_default():
    spec = RouterPolicySpec.model_validate({"specialists": {"names": ["a"]}})
    cfg = policy_config("shop", "p", spec, model_name="p", specialists=["shop/a"], budgets=[])
    assert cfg.decision_log is None


@pytest.mark.parametrize(
    ("human", "timeout_ms", "ok"),
    [
        ({"mode": "wait", "waitSeconds": 30}, 30000, True),
        ({"mode": "wait", "waitSeconds": 31}, 30000, False),
        ({"mode": "wait"}, 29999, False),  # the default wait (30 s)
        ({"mode": "hold", "waitSeconds": 600}, 1000, True),  # no wait in hold mode
        ({"mode": "email"}, 30000, False),
        ({"mode": "wait", "waitSeconds": 0}, 30000, False),
    ],
)
def test_a_wait_must_fit_in_the_tier(human, timeout_ms, ok):
    wire = {"name": "review", "human": {"queue": "q", **human}, "timeoutMs": timeout_ms}
    if ok:
        TierConfig.model_validate(wire)
    else:
        with pytest.raises(ValidationError):
            TierConfig.model_validate(wire)
