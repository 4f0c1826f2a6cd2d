"""Classification off the event loop: the cache, the inline quick stages, the worker's
micro-batches, cancellation, and a bounded queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from slmfleet.router import metrics as m
from slmfleet.router.classifying import ClassifierService, normalise
from slmfleet.router.errors import RouterError


class Scores:
    def __init__(self, best, scores):
        self.best = best
        self.confidence = scores.get(best, 0.0)
        self.scores = scores


class Staged:
    """Quick stages: the cheap one sure about texts with "sure", the static one about
    texts with "near"; the full stage records its batches."""

    def __init__(self, delay=0.0):
        self.batches: list[list[str]] = []
        self.quick_calls: list[str] = []
        self.delay = delay
        self.threads: set[str] = set()

    def quick(self, text):
        self.quick_calls.append(text)
        if "sure" in text:
            return Scores("ns/a", {"ns/a": 0.95}), "cheap"
        if "near" in text:
            return Scores("ns/c", {"ns/c": 0.8}), "static"
        return None

    def predict_staged(self, texts, cheap_done):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        self.batches.append(list(texts))
        out = []
        for t, done in zip(texts, cheap_done, strict=True):
            q = None if done else self.quick(t)
            out.append(q or (Scores("ns/b", {"ns/b": 0.5}), "full"))
        return out


def stage_count(policy, stage):
    return m.CLASSIFIER_DECISIONS.labels(policy, stage)._value.get()


@pytest.mark.parametrize(
    ("text", "key"),
    [("  Hello   World ", "hello world"), ("A\tB\nc", "a b c"), ("", "")],
)
def test_normalise(text, key):
    assert normalise(text) == key


async def test_quick_stages_inline_then_cache_then_worker():
    svc = ClassifierService()
    clf = Staged()
    try:
        scores, stage = await svc.scores("pol-a", clf, "I am SURE")
        assert (stage, scores) == ("cheap", {"ns/a": 0.95}) and clf.batches == []
        assert clf.quick_calls == ["i am sure"]  # the normalised text
        # The same text, spelled differently: the cache answers.
        scores, stage = await svc.scores("pol-a", clf, "  i am   sure ")
        assert stage == "cache" and len(clf.quick_calls) == 1
        # The static stage decides inline too, under its own label.
        static_before = stage_count("pol-a", "static")
        scores, stage = await svc.scores("pol-a", clf, "Near enough")
        assert (stage, scores) == ("static", {"ns/c": 0.8}) and clf.batches == []
        assert stage_count("pol-a", "static") == static_before + 1
        # Uncertain: the worker thread runs the full stage (quick stages not repeated).
        scores, stage = await svc.scores("pol-a", clf, "no idea")
        assert (stage, scores) == ("full", {"ns/b": 0.5})
        assert clf.batches == [["no idea"]] and clf.threads == {"slmfleet-classifier"}
        assert clf.quick_calls == ["i am sure", "near enough", "no idea"]
        assert stage_count("pol-a", "cheap") >= 1 and stage_count("pol-a", "full") >= 1
    finally:
        svc.close()


async def test_long_texts_skip_the_inline_stage_and_concurrent_requests_batch():
    svc = ClassifierService(inline_chars=20)
    clf = Staged(delay=0.05)
    try:
        long_sure = "sure " + "x" * 40
        texts = ["first uncertain"] + [f"{long_sure} {i}" for i in range(5)]
        results = await asyncio.gather(*(svc.scores("pol-b", clf, t) for t in texts))
        # The long texts reached the worker, which tried their quick stages there.
        assert [s for _, s in results] == ["full"] + ["cheap"] * 5
        assert sum(len(b) for b in clf.batches) == 6
        assert len(clf.batches) < 6  # the worker took what was queued at once
    finally:
        svc.close()


async def test_a_full_queue_answers_503_at_once():
    svc = ClassifierService(max_queue=2, inline_chars=0)
    clf = Staged(delay=0.2)
    try:
        first = asyncio.create_task(svc.scores("p", clf, "a"))  # taken by the worker
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(svc.scores("p", clf, t)) for t in ("b", "c")]
        await asyncio.sleep(0)
        with pytest.raises(RouterError) as e:
            await svc.scores("p", clf, "d")
        assert e.value.status == 503 and e.value.code == "overloaded"
        assert e.value.headers["retry-after"] == "1"
        await asyncio.gather(first, *queued)
    finally:
        svc.close()


async def test_a_cancelled_request_is_skipped_by_the_worker():
    svc = ClassifierService(inline_chars=0)
    clf = Staged(delay=0.1)
    try:
        busy = asyncio.create_task(svc.scores("p", clf, "busy"))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(svc.scores("p", clf, "client left"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await busy
        await asyncio.sleep(0.15)
        assert all("client left" not in b for b in clf.batches)
    finally:
        svc.close()


async def test_a_classifier_error_fails_its_requests_not_the_worker():
    class Broken:
        def predict(self, text):
            if text == "bad":
                raise ValueError("broken")
            return Scores("ns/a", {"ns/a": 1.0})

    svc = ClassifierService()
    try:
        with pytest.raises(ValueError):
            await svc.scores("p", Broken(), "bad")
        scores, stage = await svc.scores("p", Broken(), "good")
        assert scores == {"ns/a": 1.0} and stage == "full"
    finally:
        svc.close()


async def test_the_event_loop_keeps_running_while_the_worker_classifies():
    svc = ClassifierService(inline_chars=0)
    clf = Staged(delay=0.3)  # a slow (long) text
    try:
        task = asyncio.create_task(svc.scores("p", clf, "slow"))
        ticks = 0
        t0 = time.perf_counter()
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert time.perf_counter() - t0 >= 0.25
        assert ticks >= 10  # the loop was never blocked for the 0.3 s
    finally:
        svc.close()
