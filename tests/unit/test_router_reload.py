"""Hot reload keeps only the classifiers the serving snapshot uses."""

from __future__ import annotations

import orjson

from slmfleet.router.app import RouterApp
from tests.unit.router_fakes import (
    CONFIG,
    KeywordClassifier,
)


async def test_fit_cache_is_pruned_on_reload():
    app = RouterApp(classifier_factory=KeywordClassifier)
    for kw in ("alpha", "gamma", "delta"):
        cfg = orjson.loads(orjson.dumps(CONFIG))
        cfg["specialists"][0]["domain"]["keywords"] = [kw]
        assert await app.apply(orjson.dumps(cfg))
        assert len(app._fit_cache) == 1
        used = {id(p.classifier) for p in app.snapshot.policies.values() if p.classifier}
        assert {id(v) for v in app._fit_cache.values()} == used
    await app.shutdown()
