"""Compiling a RouterConfig: classifiers are fitted per domain set and negatives."""

from typing import Any

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.snapshot import build_snapshot


def config(negatives: list[str]) -> RouterConfig:
    spec = {"endpoint": "h:1", "tritonModel": "m", "backend": "python", "ready": True}
    return RouterConfig.model_validate(
        {
            "specialists": [
                {"id": "ns/a", **spec, "domain": {"examples": ["pay my bill"]}},
                {"id": "ns/b", **spec, "domain": {"examples": ["track my parcel"]}},
            ],
            "policies": [
                {
                    "modelName": "p",
                    "id": "ns/p",
                    "specialists": ["ns/a", "ns/b"],
                    "routing": {"semantic": {"outOfDomainExamples": negatives}},
                    "cascade": [{"name": "routed", "routed": True}],
                }
            ],
        }
    )


class Recording:
    calls: list[tuple[Any, ...]] = []

    def __init__(self, domains, *negatives):
        Recording.calls.append((tuple(sorted(domains)), *negatives))

    def predict(self, text):
        raise NotImplementedError


def test_out_of_domain_examples_reach_the_classifier_and_its_cache_key():
    Recording.calls = []
    cache: dict[str, Any] = {}
    build_snapshot(config([]), classifier_factory=Recording, cache=cache)
    build_snapshot(config(["tell me a joke"]), classifier_factory=Recording, cache=cache)
    build_snapshot(config(["tell me a joke"]), classifier_factory=Recording, cache=cache)
    assert Recording.calls == [
        (("ns/a", "ns/b"),),  # no negatives: the one-argument factory call, as before
        (("ns/a", "ns/b"), ("tell me a joke",)),
    ]  # the third build found its classifier in the cache
    assert len(cache) == 2
