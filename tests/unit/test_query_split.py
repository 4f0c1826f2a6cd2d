"""Multi-domain query splitting: segmentation, the split decision (tables) and the
engine answering the parts concurrently and recording each (scripted upstream)."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.routing import RouteDecision
from slmfleet.router.splitting import (
    MAX_SPLIT_CHARS,
    Segment,
    plan_split,
    segment,
)
from tests.unit.router_fakes import CONFIG, cfg_with, make, run, words


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("where is my parcel", ["where is my parcel"]),
        (
            "my order arrived damaged and I also need to change my password",
            ["my order arrived damaged", "I also need to change my password"],
        ),
        (
            "Where is my parcel? I need a refund for my invoice.",
            ["Where is my parcel?", "I need a refund for my invoice."],
        ),
        ("track my parcel; refund my card fee", ["track my parcel", "refund my card fee"]),
        ("book a table\nwhat is my balance", ["book a table", "what is my balance"]),
        ("cancel my card, and also book a flight", ["cancel my card", "book a flight"]),
        ("refund my fee, also track my parcel", ["refund my fee", "track my parcel"]),
        # Short pieces go back to their neighbour: no part of one or two words.
        ("what is the exchange rate between dollars and euros",
         ["what is the exchange rate between dollars and euros"]),
        ("rock and roll music please", ["rock and roll music please"]),
        ("hi. my order is broken", ["hi. my order is broken"]),
        ("hi there. my order is broken", ["hi there.", "my order is broken"]),
        ("please help and thanks", ["please help and thanks"]),
    ],
)  # fmt: skip
def test_segment(text, pieces):
    segs = segment(text)
    assert [s.text for s in segs] == pieces
    for s in segs:  # offsets point into the original text
        assert text[s.start : s.end].strip() == s.text


def test_segment_bounds_parts_and_length():
    text = "one two three. four five six. seven eight nine. ten eleven twelve."
    assert [s.text for s in segment(text, max_parts=2)] == [
        "one two three.",
        "four five six. seven eight nine. ten eleven twelve.",
    ]
    long = "track my parcel and refund my fee " * (MAX_SPLIT_CHARS // 30)
    assert len(long) > MAX_SPLIT_CHARS and len(segment(long)) == 1


def R(sid, conf, source="classifier", **scores):
    return RouteDecision(sid, conf, source, scores)


TEXT = "aaa aaa aaa. bbb bbb bbb. ccc ccc ccc."
SEGS = segment(TEXT)


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ([R("a", 0.9), R("b", 0.8), R("a", 0.2)], [("aaa aaa aaa.", "a"),
                                                    ("bbb bbb bbb. ccc ccc ccc.", "b")]),
        ([R("a", 0.9), R("a", 0.8), R("b", 0.9)], [("aaa aaa aaa. bbb bbb bbb.", "a"),
                                                    ("ccc ccc ccc.", "b")]),
        ([R("a", 0.3), R("a", 0.9), R("b", 0.9)], [("aaa aaa aaa. bbb bbb bbb.", "a"),
                                                    ("ccc ccc ccc.", "b")]),
        ([R("a", 0.9), R("c", 0.9), R("b", 0.9)], [("aaa aaa aaa.", "a"), ("bbb bbb bbb.", "c"),
                                                    ("ccc ccc ccc.", "b")]),
        ([R("a", 0.9), R("a", 0.9), R("a", 0.9)], None),  # one specialist: stays whole
        ([R("a", 0.9), R("b", 0.4), R("b", 0.3)], None),  # only one part is confident
        ([R("a", 0.9), R(None, 0.9), R("b", 0.3)], None),  # unrouted pieces never count
        ([R("a", 0.9)], None),
    ],
)  # fmt: skip
def test_plan_split(routes, expected):
    plan = plan_split(TEXT, SEGS[: len(routes)], routes, 0.5)
    if expected is None:
        assert plan is None
    else:
        assert [(p.segment.text, p.route.specialist) for p in plan] == expected


def test_a_merged_part_keeps_its_most_confident_route():
    plan = plan_split(TEXT, SEGS, [R("a", 0.6), R("a", 0.95), R("b", 0.9)], 0.5)
    assert plan is not None and plan[0].route.confidence == 0.95
    assert plan[0].segment == Segment(0, 25, "aaa aaa aaa. bbb bbb bbb.")


# -- the engine ---------------------------------------------------------------------------

SPLIT = {
    "modelName": "s",
    "id": "ns/s",
    "specialists": ["ns/a", "ns/b"],
    "routing": {"split": {"enabled": True}},
    "cascade": [
        {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
        {"name": "large", "specialist": "ns/big"},
    ],
}
TWO = "tell me about the alpha thing, and also the beta thing please"


def split_config(**routing):
    policy = {**SPLIT, "routing": {"split": {"enabled": True, **routing}}}
    return cfg_with(policies=[policy], specialists=CONFIG["specialists"])


async def test_parts_are_answered_by_their_specialists_and_merged_in_order():
    snap, pool, eng = make(
        {"ma": words("alpha answer", 0.95), "mb": words("beta answer", 0.3),
         "mbig": words("big answer", 0.99)},
        split_config(),
    )  # fmt: skip
    out, d = await run(eng, snap, TWO, model="s")
    assert out.text == "alpha answer \n\nbig answer "
    prompts = sorted(c[1] for c in pool.calls)
    assert prompts == ["tell me about the alpha thing", "the beta thing please",
                       "the beta thing please"]  # fmt: skip
    assert d.route == "ns/a,ns/b" and d.route_source == "split"
    assert d.tier == "routed,large" and d.target == "ns/a,ns/big"
    assert d.escalations == ["part2/routed:low_answer_confidence"]
    assert d.extra_headers == {"split": "2"}
    assert (b"x-slmfleet-split", b"2") in d.headers()
    parts = d.summary()["split"]
    assert [(p["part"], p["route"], p["tier"]) for p in parts] == [
        (1, "ns/a", "routed"),
        (2, "ns/b", "large"),
    ]
    assert parts[0]["chars"] == [0, len("tell me about the alpha thing")]
    assert d.completion_tokens == sum(p["tokens"] for p in parts) - d.prompt_tokens
    assert d.completion_tokens == 2 + 2 + 2  # every call's tokens, the escalated one too


async def test_one_domain_or_split_off_stays_whole():
    script = {"ma": words("alpha answer", 0.95), "mb": words("beta answer", 0.95)}
    snap, pool, eng = make(script, split_config())
    out, d = await run(eng, snap, "alpha one thing, and also alpha again here", model="s")
    assert out.text == "alpha answer " and d.route == "ns/a" and "split" not in d.summary()
    assert len(pool.calls) == 1
    off = {**SPLIT, "routing": {}}
    snap, pool, eng = make(script, cfg_with(policies=[off], specialists=CONFIG["specialists"]))
    _out, d = await run(eng, snap, TWO, model="s")
    assert d.route in ("ns/a", "ns/b") and len(pool.calls) == 1


async def test_streamed_split_emits_the_parts_once_all_are_done():
    sent: list[str] = []

    async def emit(t):
        sent.append(t)

    script = {"ma": words("alpha answer", 0.95), "mb": words("beta answer", 0.95)}
    snap, _pool, eng = make(script, split_config())
    out, d = await run(eng, snap, TWO, model="s", emit=emit, stream=True)
    assert sent == ["alpha answer ", "\n\nbeta answer "] and out.emitted
    assert d.tier == "routed,routed"


async def test_parts_run_concurrently():
    started: list[str] = []
    gate = asyncio.Event()

    def slow(name):
        async def gen():
            started.append(name)
            if len(started) == 2:
                gate.set()
            await asyncio.wait_for(gate.wait(), 2)  # both parts must be in flight
            for w in words(f"{name} answer", 0.95):
                yield w

        return gen

    snap, pool, eng = make({}, split_config())

    async def stream(endpoint, model, prompt, sampling, **kw):
        from slmfleet.router.triton import Piece

        async for text, conf in slow(model)():
            yield Piece(text, conf)

    pool.stream = stream
    out, _d = await run(eng, snap, TWO, model="s")
    assert out.text == "ma answer \n\nmb answer " and sorted(started) == ["ma", "mb"]


async def test_a_failing_part_fails_the_request_and_records_the_parts():
    cfg = split_config()
    cfg["policies"][0]["cascade"] = [{"name": "routed", "routed": True}]
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95), "mb": UpstreamError("x")}, cfg)
    with pytest.raises(RouterError) as err:
        await run(eng, snap, TWO, model="s")
    assert err.value.status == 502
    d = err.value.decision
    assert d.route == "ns/a,ns/b" and "part2/routed:error" in d.escalations


async def test_a_rule_for_one_part_and_the_classifier_for_the_other():
    cfg = split_config()
    cfg["policies"][0]["routing"]["rules"] = [
        {"name": "refunds", "keywords": ["refund"], "specialist": "ns/a"}
    ]
    snap, _pool, eng = make(
        {"ma": words("alpha answer", 0.95), "mb": words("beta answer", 0.95)}, cfg
    )
    _out, d = await run(eng, snap, "I want a refund for the order and the beta thing too", "s")
    assert d.route == "ns/a,ns/b"
    assert [p["route_source"] for p in d.summary()["split"]] == ["rule:refunds", "classifier"]


async def test_part_confidence_defaults_to_the_semantic_threshold():
    script = {"ma": words("alpha answer", 0.95), "mb": words("beta answer", 0.95),
              "mbig": words("big answer", 0.99)}  # fmt: skip
    # The keyword classifier scores a matching part 0.9.
    snap, _pool, eng = make(script, split_config(minConfidence=0.95))
    _out, d = await run(eng, snap, TWO, model="s")
    assert "split" not in d.summary()
    cfg = split_config()
    cfg["policies"][0]["routing"]["semantic"] = {"minConfidence": 0.95}
    snap, _pool, eng = make(script, cfg)
    _out, d = await run(eng, snap, TWO, model="s")
    assert "split" not in d.summary()
    snap, _pool, eng = make(script, split_config(minConfidence=0.85))
    _out, d = await run(eng, snap, TWO, model="s")
    assert d.summary()["split"][1]["route"] == "ns/b"
