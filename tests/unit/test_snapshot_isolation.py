"""One policy the router cannot compile or fit is left out; the others are served."""

from __future__ import annotations

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.snapshot import build_snapshot


def config() -> RouterConfig:
    def spec(name: str, example: str) -> dict:
        return {"id": f"ns/{name}", "endpoint": "h:1", "tritonModel": name, "backend": "python",
                "ready": True, "domain": {"examples": [example]}}  # fmt: skip

    def pol(name: str, target: str) -> dict:
        return {"modelName": name, "id": f"ns/{name}", "specialists": [f"ns/{target}"],
                "cascade": [{"name": "routed", "routed": True}]}  # fmt: skip

    return RouterConfig.model_validate(
        {
            "specialists": [spec("good", "fine"), spec("poison", "explodes")],
            "policies": [pol("good", "good"), pol("bad", "poison")],
        }
    )


class Fitted:
    def predict(self, text: str):  # pragma: no cover - not called here
        raise NotImplementedError


def factory(domains):
    if any("explodes" in d.examples for d in domains.values()):
        raise RuntimeError("the classifier cannot be fitted on this domain")
    return Fitted()


def test_a_policy_that_cannot_be_fitted_is_left_out_alone(caplog):
    caplog.set_level("ERROR", logger="slmfleet.router")
    snap = build_snapshot(config(), classifier_factory=factory)
    assert set(snap.policies) >= {"good", "ns/good", "ns/poison"}
    assert "bad" not in snap.policies
    assert {m["id"] for m in snap.models} == {"good", "ns/good", "ns/poison"}
    assert "policy ns/bad left out" in caplog.text
