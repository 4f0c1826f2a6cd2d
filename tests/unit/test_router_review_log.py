"""Human-review cases are logged whatever the log level."""

from __future__ import annotations

import logging

import orjson

from slmfleet.router.errors import UpstreamError
from tests.unit.router_fakes import (
    CONFIG,
    make,
    run,
)


async def test_review_cases_are_logged_whatever_the_log_level(capsys):
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        snap, _pool, eng = make({"mbig": UpstreamError("boom")}, CONFIG)
        await run(eng, snap, "gamma", "p")
    finally:
        root.setLevel(old)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "human_review" in ln]
    assert len(lines) == 1
    case = orjson.loads(lines[0])
    assert case["queue"] == "q" and case["messages"] == [{"role": "user", "content": "gamma"}]
    assert logging.getLogger("slmfleet.router.review").propagate is False
