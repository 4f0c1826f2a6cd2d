"""The static-embedding table made ahead of time, as the router image makes it: the CLI
distils the packaged encoder's table into a directory, and a router process pointed at
that directory (read-only, as in the image) reads it instead of distilling it again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOAD = """
import logging, time
logging.basicConfig(level=logging.INFO)
from slmfleet.router.embed import default_encoder
from slmfleet.router.static_embed import StaticEmbedder
t = time.process_time()
e = StaticEmbedder.of(default_encoder())
print("rows", e.vocab, "dims", e.dim, "cpu", round(time.process_time() - t, 2))
"""


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "operator"), **extra)


def test_a_table_made_ahead_is_read_not_distilled(tmp_path):
    d = tmp_path / "static"
    made = subprocess.run(
        [sys.executable, "-m", "slmfleet.router.static_embed", str(d)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip())
    assert path.parent == d and path.suffix == ".npy" and path.stat().st_size > 10_000_000
    d.chmod(0o555)  # the image's copy is read-only to the router's user
    try:
        run = subprocess.run(
            [sys.executable, "-c", LOAD],
            env=_env(SLMFLEET_STATIC_CACHE=str(d)),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        d.chmod(0o755)
    assert run.returncode == 0, run.stderr
    assert "rows 30522 dims 256" in run.stdout
    assert "distilled the static embedding table" not in run.stderr  # read, not made
    assert [p.name for p in d.iterdir()] == [path.name]


def test_an_unwritable_directory_is_an_error_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"  # unwritable as a directory even for root
    blocker.write_text("")
    run = subprocess.run(
        [sys.executable, "-m", "slmfleet.router.static_embed", str(blocker / "static")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "could not write the table" in run.stderr
    assert "distilled" not in run.stderr
