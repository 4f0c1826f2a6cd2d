"""A process that writes to the decision store until it is killed (kill -9 tests).

``python -m tests.integration.durability_child URL decisions``: submits decisions as
fast as the writer takes them and prints ``flushed <id>`` for each committed one;
``... URL cases``: files review cases one after another and prints ``filed <id>``
after each commit returns (what the human tier does before answering the caller).
"""

from __future__ import annotations

import sys
import time

from slmfleet.telemetry.record import DecisionRecord
from slmfleet.telemetry.review import CaseInput, ReviewService
from slmfleet.telemetry.settings import DecisionLogSettings
from slmfleet.telemetry.store import open_store
from slmfleet.telemetry.writer import DecisionWriter


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def decisions(url: str) -> None:
    store = open_store(url)
    settings = DecisionLogSettings(flush_interval_s=0.05, batch_max=200)
    writer = DecisionWriter(
        store, settings, on_flush=lambda ids: [say(f"flushed {i}") for i in ids]
    ).start()
    i = 0
    while True:
        if writer.submit(DecisionRecord(f"d{i}", time.time(), "support")):
            say(f"submitted d{i}")
            i += 1
        time.sleep(0.0005)


def cases(url: str) -> None:
    store = open_store(url)
    service = ReviewService(store)
    i = 0
    while True:
        case = service.build_case(
            CaseInput(f"r{i}", "support", "tier2", [{"role": "user", "content": f"help {i}"}])
        )
        store.file_case(case)
        say(f"filed {case.id}")
        i += 1


if __name__ == "__main__":
    {"decisions": decisions, "cases": cases}[sys.argv[2]](sys.argv[1])
