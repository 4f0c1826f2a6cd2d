"""The routed workload of router_overhead.py: what a new user's policy looks like.

10 CLINC150 domains, one specialist each, 50 example requests per domain from
train.jsonl (a fixed random draw); requests are other questions - val.jsonl and the rest
of train, never the 500 examples - each sent once per pass through a shuffled list far
longer than the router's decision cache, so the cache never answers. Long prompts
(3,000 characters) are distinct concatenations of such questions.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import orjson

EXAMPLES_PER_DOMAIN = 50
LONG_CHARS = 3000


def data_dir() -> Path:
    env = os.environ.get("SLMFLEET_DATA")
    if env:
        return Path(env)
    for p in Path(__file__).resolve().parents:
        if (p / "shared" / "data" / "clinc150").is_dir():
            return p / "shared" / "data" / "clinc150"
    raise SystemExit("CLINC150 not found: set SLMFLEET_DATA to its folder")


def _load(split: str) -> list[dict]:
    with open(data_dir() / f"{split}.jsonl") as f:
        return [json.loads(line) for line in f]


class Workload:
    def __init__(self, seed: int = 0) -> None:
        rng = random.Random(seed)
        train = _load("train")
        by_domain: dict[str, list[str]] = {}
        for r in train:
            by_domain.setdefault(r["domain"], []).append(r["text"])
        self.examples = {
            d: rng.sample(texts, EXAMPLES_PER_DOMAIN) for d, texts in sorted(by_domain.items())
        }
        fitted = {t for ex in self.examples.values() for t in ex}
        questions = [r["text"] for r in _load("val")]
        questions += [r["text"] for r in train if r["text"] not in fitted]
        rng.shuffle(questions)
        self.questions = questions
        self._next = itertools.count()
        """One cursor for every request stream of this workload: no question repeats
        until all were sent."""

    def specialists(self, prefix: str, endpoint: str, model: str) -> list[dict]:
        return [
            {
                "id": f"{prefix}/{d.replace('_', '-')}",
                "endpoint": endpoint,
                "tritonModel": model,
                "backend": "python",
                "ready": True,
                "domain": {"examples": ex},
                "cost": {"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2},
            }
            for d, ex in self.examples.items()
        ]

    def _long(self, start: int) -> str:
        parts, n, i = [], 0, start
        while n < LONG_CHARS:
            q = self.questions[i % len(self.questions)]
            parts.append(q)
            n += len(q) + 1
            i += 7919  # a prime stride: every long prompt a different mix
        return " ".join(parts)[:LONG_CHARS]

    def bodies(self, model: str, long_every: int = 0) -> Iterator[tuple[str, bytes]]:
        """(tag, body) forever: each question once per pass; every ``long_every``-th
        request (if set) a 3,000-character prompt instead."""
        for i in itertools.count():
            k = next(self._next)
            if long_every and i % long_every == long_every - 1:
                tag, text = "long", self._long(k)
            else:
                tag, text = "short", self.questions[k % len(self.questions)]
            yield (
                tag,
                orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]}),
            )
