"""The classifier's defaults are the ones the train-split benchmarks chose (and say they
chose): changing a default without re-running them fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmfleet.router.classify import ClassifierParams

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_defaults_are_the_grid_choice():
    chosen = json.loads((RESULTS / "classifier_tuning.json").read_text())["chosen"]
    defaults = ClassifierParams()
    assert {k: getattr(defaults, k) for k in chosen} == pytest.approx(chosen)


def test_cheap_stage_defaults_are_the_staged_choice():
    report = json.loads((RESULTS / "routing_quality.json").read_text())
    chosen = report["staged_cut_choice"]["chosen"]
    defaults = ClassifierParams()
    assert (defaults.cheap_cut, defaults.cheap_familiarity) == (
        chosen["cheap_cut"],
        chosen["cheap_familiarity"],
    )
    # ... and val was scored with them.
    scored = report["staged_on_val"]["params"]
    assert (scored["cheap_cut"], scored["cheap_familiarity"]) == (
        defaults.cheap_cut,
        defaults.cheap_familiarity,
    )


def test_static_stage_defaults_are_the_tuning_choice():
    report = json.loads((RESULTS / "static_stage_tuning.json").read_text())
    chosen = report["chosen"]
    defaults = ClassifierParams()
    assert {k: getattr(defaults, k) for k in chosen} == chosen
    assert report["defaults"] == chosen  # the report was written with them in place
