"""The router's staged classifier: the cheap TF-IDF stage decides only when it is sure,
the full classifier decides the rest, and inputs are clipped in tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest

from slmfleet.api.routerconfig import DomainConfig
from slmfleet.router.classify import ClassifierParams, DomainClassifier
from slmfleet.router.classifying import normalise
from slmfleet.router.staged import StagedClassifier
from tests.unit.test_classify import FLEET, HAVE_MODEL, MODES, OUT_OF_DOMAIN, ROUTED

BANKING = [
    "what is my checking account balance please",
    "what is the balance of my checking account",
    "transfer 200 dollars from savings to checking now",
]


@pytest.fixture(scope="module", params=MODES)
def staged(request) -> StagedClassifier:
    return StagedClassifier(DomainClassifier.fit(FLEET, embed=request.param))


def test_the_cheap_stage_decides_only_when_sure(staged):
    staged.cut = 0.5
    sure = [staged.cheap(normalise(t)) for t in BANKING]
    assert all(r is not None and r.best == "fin/banking" for r in sure), sure
    for r in sure:
        assert r.confidence >= 0.5 and r.confidence == pytest.approx(r.scores["fin/banking"])
        assert set(r.scores) == set(FLEET)  # every specialist, the example-less one too
    staged.cut = 1.01  # never sure: everything goes to the full classifier
    assert all(staged.cheap(normalise(t)) is None for t in BANKING)
    staged.cut = staged.full.params.cheap_cut


def test_out_of_domain_is_never_decided_by_the_cheap_stage(staged):
    assert all(staged.cheap(normalise(t)) is None for t in OUT_OF_DOMAIN)


@pytest.mark.parametrize(("text", "want"), ROUTED)
def test_staged_routes_like_the_full_classifier(staged, text, want):
    ((r, stage),) = staged.predict_staged([normalise(text)])
    assert r.best == want and stage in ("cheap", "full")
    full = staged.full.predict(normalise(text))
    if stage == "full":
        assert r.confidence == pytest.approx(full.confidence)


def test_cheap_done_skips_the_cheap_stage(staged):
    staged.cut = 0.0  # the cheap stage would decide everything
    got = staged.predict_staged([normalise(BANKING[0])] * 2, cheap_done=[False, True])
    assert [s for _, s in got] == ["cheap", "full"]
    staged.cut = staged.full.params.cheap_cut


@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedding model")
def test_long_inputs_are_clipped_in_tokens_head_and_tail():
    staged = StagedClassifier(DomainClassifier.fit(FLEET))
    tok = staged.full.encoder._tok
    text = "please " + "blah " * 2000 + "what is my checking account balance"
    clipped = staged.clip(text)
    n = len(tok.encode(clipped, add_special_tokens=False).ids)
    assert n <= staged.max_tokens + 2
    assert clipped.startswith("please blah") and clipped.endswith("checking account balance")
    assert staged.clip("short text") == "short text"
    # The end of a long message still routes it.
    ((r, _),) = staged.predict_staged([normalise(text)])
    assert r.best == "fin/banking"


def test_without_embeddings_inputs_are_clipped_in_characters():
    staged = StagedClassifier(DomainClassifier.fit(FLEET, embed=False))
    text = "x" * 10_000
    assert len(staged.clip(text)) <= 6 * staged.max_tokens + 1


# Every word of these examples occurs in two other examples: each is fully familiar to
# the rest, so the familiarity floor is 1.0 and one unknown word keeps a request from
# being decided by word statistics alone.
FAMILIAR = {
    "a/banking": DomainConfig(
        examples=["check account balance", "account balance check", "balance check account"]
    ),
    "b/travel": DomainConfig(
        examples=["book hotel flight", "flight hotel book", "hotel book flight"]
    ),
}


def test_the_cheap_stage_refuses_unfamiliar_requests():
    staged = StagedClassifier(DomainClassifier.fit(FAMILIAR, embed=False))
    staged.cut = 0.5
    assert staged.full.familiar_floor == pytest.approx(1.0)
    known = staged.cheap("check account balance")
    assert known is not None and known.best == "a/banking"
    # Same domain words, one the examples never used: the full classifier decides.
    assert staged.cheap("check account balance tomorrow") is None
    ((r, stage),) = staged.predict_staged(["check account balance tomorrow"])
    assert stage == "full" and r.best == "a/banking"


def test_familiarity_check_off_decides_on_probability_alone():
    params = replace(ClassifierParams(), cheap_familiarity=0.0)
    staged = StagedClassifier(DomainClassifier.fit(FAMILIAR, embed=False, params=params))
    staged.cut = 0.5
    assert staged.full.familiar_floor == 0.0
    r = staged.cheap("check account balance tomorrow")
    assert r is not None and r.best == "a/banking"


def test_without_the_minilm_encoder_there_is_no_static_stage():
    staged = StagedClassifier.fit(FLEET, embed=False)
    assert staged.static is None
    staged.cut = 0.0
    assert [staged.quick(normalise(t))[1] for t in BANKING] == ["cheap"] * len(BANKING)
    staged.cut = 1.01
    assert [staged.quick(normalise(t)) for t in BANKING] == [None] * len(BANKING)


#: The cheap stage off and the static stage's cut, familiarity and agreement guards open:
#: only its similarity guard (set per test) stands between a request and a decision.
STATIC_ONLY = replace(
    ClassifierParams(),
    cheap_cut=1.01,
    static_cut=0.0,
    static_familiarity=0.0,
    static_agreement=False,
)


@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedding model")
def test_the_static_stage_decides_between_cheap_and_full():
    # Cheap stage off, static guards open: every in-domain request is decided statically.
    params = replace(STATIC_ONLY, static_similarity=0.0)
    staged = StagedClassifier.fit(FLEET, params=params)
    assert staged.static is not None
    for text in BANKING:
        r, stage = staged.quick(normalise(text))
        assert (stage, r.best) == ("static", "fin/banking")
        assert set(r.scores) == set(FLEET) and r.confidence == pytest.approx(r.scores[r.best])
    ((_, stage),) = staged.predict_staged([normalise(BANKING[0])])
    assert stage == "static"
    # Off (cut above 1): no static stage at all, the full classifier decides.
    off = StagedClassifier.fit(FLEET, params=replace(params, static_cut=1.01))
    assert off.static is None
    assert [s for _, s in off.predict_staged([normalise(BANKING[0])])] == ["full"]


@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedding model")
def test_the_static_similarity_guard_refuses_what_is_far_from_every_example():
    staged = StagedClassifier.fit(FLEET, params=replace(STATIC_ONLY, static_similarity=0.5))
    assert staged.static is not None and staged.static.sim_floor > 0
    assert all(staged.quick(normalise(t)) is None for t in OUT_OF_DOMAIN)
    # The same requests pass when the guard is off (the LR alone is always "sure").
    open_ = StagedClassifier.fit(FLEET, params=replace(STATIC_ONLY, static_similarity=0.0))
    assert all(open_.quick(normalise(t))[1] == "static" for t in OUT_OF_DOMAIN)


@pytest.mark.skipif(not HAVE_MODEL, reason="needs the embedding model")
def test_out_of_domain_is_never_decided_by_a_quick_stage_with_the_defaults():
    staged = StagedClassifier.fit(FLEET)
    assert staged.static is not None
    assert all(staged.quick(normalise(t)) is None for t in OUT_OF_DOMAIN)
