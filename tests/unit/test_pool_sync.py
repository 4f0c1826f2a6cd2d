"""The pool's repository sidecar (pool.sync) on a temporary store: members appear whole,
a config-only change keeps the fetched artifact, a removed member goes."""

from __future__ import annotations

import json
from pathlib import Path

from slmfleet.pool.sync import MANIFEST, MEMBER_MARKER, layout, sync_once


def write(config: Path, members: dict[str, dict], files: dict[str, str]) -> None:
    config.mkdir(exist_ok=True)
    for p in config.iterdir():
        p.unlink()
    (config / MANIFEST).write_text(layout(members))
    for key, text in files.items():
        (config / key).write_text(text)


def test_sync_lays_out_changes_and_removes(tmp_path: Path) -> None:
    source = tmp_path / "source" / "claim" / "a"
    source.mkdir(parents=True)
    (source / "model.py").write_text("weights")
    config, store = tmp_path / "cm", tmp_path / "store"
    a = {"uri": "pvc://claim/a", "subdir": "", "digest": "d1",
         "files": {"config.pbtxt": "a.config.pbtxt"}}  # fmt: skip
    write(config, {"a": a}, {"a.config.pbtxt": 'name: "a"'})
    assert sync_once(config, store, source_root=tmp_path / "source") == ["a"]
    repo = store / "models" / "a"
    assert (repo / "config.pbtxt").read_text() == 'name: "a"'
    assert (repo / "1" / "model.py").read_text() == "weights"
    assert json.loads((repo / MEMBER_MARKER).read_text())["digest"] == "d1"
    assert sync_once(config, store, source_root=tmp_path / "source") == []  # idempotent

    # Config only: new digest, same URI: the artifact is kept even if the source is gone.
    (source / "model.py").unlink()
    write(config, {"a": a | {"digest": "d2"}}, {"a.config.pbtxt": 'name: "a" # v2'})
    assert sync_once(config, store, source_root=tmp_path / "source") == ["a"]
    assert (repo / "config.pbtxt").read_text().endswith("# v2")
    assert (repo / "1" / "model.py").read_text() == "weights"

    # A member whose fetch fails is left out (and retried); a removed one goes.
    b = {"uri": "pvc://claim/missing", "subdir": "", "digest": "x", "files": {}}
    write(config, {"b": b}, {})
    assert sync_once(config, store, source_root=tmp_path / "source") == ["a"]  # a removed
    assert not (store / "models" / "a").exists() and not (store / "models" / "b").exists()
    assert not any((store / "staging").iterdir())
