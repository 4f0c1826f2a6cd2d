"""The local fleet's decision log and review queue (``slmfleet up``).

The embedded default is a SQLite file in a state directory that outlives one run
(``$SLMFLEET_STATE_DIR``, else ``$XDG_STATE_HOME/slmfleet/<namespace>``, else
``~/.local/state/slmfleet/<namespace>``), so decisions, feedback and review cases are
still there after a restart. Reviewers come from ``--reviewers FILE``; without one a
local reviewer (``local``, every queue) gets a key of its own, kept in the state
directory (owner-only) and never printed: the console asks for it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..telemetry.runtime import local_store_url


def default_state_dir(namespace: str) -> Path:
    if os.environ.get("SLMFLEET_STATE_DIR"):
        return Path(os.environ["SLMFLEET_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "slmfleet" / namespace


@dataclass(frozen=True)
class LocalTelemetry:
    store_url: str | None
    """None: no decision store (``--store off``)."""
    reviewers_file: Path | None
    reviewer_key_file: Path | None
    """The generated local reviewer's key (when no reviewers file was given)."""

    def env(self) -> dict[str, str]:
        """What the router process is given (the chart sets the same variables)."""
        out: dict[str, str] = {}
        if self.store_url:
            out["SLMFLEET_DECISION_STORE"] = self.store_url
        if self.reviewers_file is not None:
            out["SLMFLEET_REVIEWERS_FILE"] = str(self.reviewers_file)
        return out


def prepare(state_dir: Path, store: str | None, reviewers: Path | None) -> LocalTelemetry:
    """``store``: a URL, ``off``, or None for the SQLite file in ``state_dir``."""
    if store == "off":
        return LocalTelemetry(None, None, None)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = store or local_store_url(state_dir)
    if reviewers is not None:
        return LocalTelemetry(url, reviewers.resolve(), None)
    key_file = state_dir / "reviewer.key"
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(24) + "\n")
    key = key_file.read_text().strip()
    listing = state_dir / "reviewers.yaml"
    listing.touch(mode=0o600)
    digest = hashlib.sha256(key.encode()).hexdigest()
    listing.write_text(yaml.safe_dump([{"name": "local", "keySha256": digest, "queues": ["*"]}]))
    return LocalTelemetry(url, listing, key_file)
