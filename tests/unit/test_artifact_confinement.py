"""Artifacts are read inside ``<root>/<namespace>`` only, even through symlinks, and
only up to a size: a tenant's folder must not expose another tenant's classifier, nor
make the router parse a file of any size."""

from __future__ import annotations

import json

import pytest

from slmfleet.router.artifacts import (
    MAX_TOKENIZER_BYTES,
    ArtifactReader,
    ArtifactUnavailable,
    artifact_path,
)


@pytest.fixture
def root(tmp_path):
    """Team b's classifier, and team a's claim folder beside it."""
    from slmfleet.router.embed import model_dir

    theirs = tmp_path / "b" / "claim" / "clf"
    theirs.mkdir(parents=True)
    (theirs / "tokenizer.json").write_bytes((model_dir() / "tokenizer.json").read_bytes())
    (theirs / "config.json").write_text(json.dumps({"id2label": {"0": "no", "1": "yes"}}))
    (tmp_path / "a" / "claim").mkdir(parents=True)
    return tmp_path


def test_a_symlinked_folder_cannot_reach_another_namespace(root):
    (root / "a" / "claim" / "clf").symlink_to(root / "b" / "claim" / "clf")
    with pytest.raises(ArtifactUnavailable, match="leaves the namespace"):
        artifact_path("pvc://claim/clf", root, "a")
    with pytest.raises(ArtifactUnavailable, match="leaves the namespace"):
        ArtifactReader(root).classifier("pvc://claim/clf", "a")
    assert ArtifactReader(root).classifier("pvc://claim/clf", "b").labels == ("no", "yes")


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_a_symlinked_file_cannot_reach_another_namespace(root, name):
    mine = root / "a" / "claim" / "clf"
    mine.mkdir()
    for f in ("tokenizer.json", "config.json"):
        src = root / "b" / "claim" / "clf" / f
        if f == name:
            (mine / f).symlink_to(src)
        else:
            (mine / f).write_bytes(src.read_bytes())
    with pytest.raises(ArtifactUnavailable, match=f"{name}: leaves the namespace"):
        ArtifactReader(root).classifier("pvc://claim/clf", "a")


def test_a_symlink_within_the_namespace_is_fine(root):
    (root / "b" / "claim" / "latest").symlink_to(root / "b" / "claim" / "clf")
    assert ArtifactReader(root).classifier("pvc://claim/latest", "b").labels == ("no", "yes")


def test_an_oversized_tokenizer_is_refused_before_it_is_read(root):
    tok = root / "b" / "claim" / "clf" / "tokenizer.json"
    with open(tok, "r+b") as f:  # sparse: no disk used
        f.truncate(MAX_TOKENIZER_BYTES + 1)
    with pytest.raises(ArtifactUnavailable, match="bytes; at most"):
        ArtifactReader(root).classifier("pvc://claim/clf", "b")
