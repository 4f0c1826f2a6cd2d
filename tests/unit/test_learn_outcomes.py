"""Outcome records: what each one says about routing and answers; the JSONL reader."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from slmfleet.learn.outcomes import (
    OUT_OF_DOMAIN,
    JsonlOutcomes,
    OutcomeError,
    OutcomeRecord,
    in_order,
    write_jsonl,
)


def rec(**kw) -> OutcomeRecord:
    return OutcomeRecord.model_validate({"request_id": "r", "policy": "p"} | kw)


@pytest.mark.parametrize(
    ("kw", "answer", "known", "best", "routed"),
    [
        ({"outcome": "correct", "route": "a"}, True, "a", True, True),
        ({"outcome": "incorrect", "route": "a"}, False, None, None, None),
        ({"answer_label": "Refund", "true_label": "refund"}, True, None, None, None),
        ({"answer_label": "invoice", "true_label": "refund"}, False, None, None, None),
        ({"route": "a", "true_route": "b"}, None, "b", False, False),
        ({"route": "a", "true_route": OUT_OF_DOMAIN}, None, OUT_OF_DOMAIN, False, False),
        ({"route": None, "true_route": OUT_OF_DOMAIN}, None, OUT_OF_DOMAIN, False, False),
        # escalated in-domain: was the top specialist right? only best_route can tell
        ({"route": None, "true_route": "a"}, None, "a", None, False),
        ({"route": None, "best_route": "a", "true_route": "a"}, None, "a", True, False),
    ],
)
def test_what_a_record_tells(kw, answer, known, best, routed):
    r = rec(**kw)
    assert (r.answer_correct, r.known_route, r.best_correct, r.routed_correctly) == (
        answer, known, best, routed,
    )  # fmt: skip


def test_classified_excludes_rules_and_direct():
    assert rec(route_source="classifier").classified and rec().classified
    assert rec(route_source="out_of_domain").classified and rec(route_source="cost").classified
    assert not rec(route_source="rule:refunds").classified
    assert not rec(route_source="direct").classified


def test_in_order_sorts_by_time_and_keeps_untimed_in_place():
    t = [datetime(2026, 1, d, tzinfo=UTC) for d in (3, 1, 2)]
    rs = [rec(request_id="a", time=t[0]), rec(request_id="b"), rec(request_id="c", time=t[1])]
    rs.append(rec(request_id="d", time=datetime(2026, 1, 2)))  # naive: UTC
    assert [r.request_id for r in in_order(rs)] == ["c", "d", "a", "b"]


def test_jsonl_round_trip_and_errors(tmp_path):
    path = tmp_path / "o.jsonl"
    write_jsonl(path, [rec(request_id="x", routing_confidence=0.5, extra_field=1)])
    text = path.read_text()
    assert "extra_field" not in text
    path.write_text("# comment\n\n" + text + '{"request_id": "y", "policy": "q"}\n')
    assert [r.request_id for r in JsonlOutcomes(path).outcomes(policy="q")] == ["y"]
    for bad, msg in [
        ("[1, 2]", "must be a JSON object"),
        ("{nope", "not JSON"),
        ('{"request_id": "z"}', "field policy"),
        ('{"request_id": "z", "policy": "p", "outcome": "maybe"}', "field outcome"),
        ('{"request_id": "z", "policy": "p", "answer_confidence": -1}', "answer_confidence"),
    ]:
        path.write_text(text + bad + "\n")
        with pytest.raises(OutcomeError, match=f"o.jsonl:2: .*{msg}"):
            list(JsonlOutcomes(path).outcomes())
