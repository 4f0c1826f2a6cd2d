"""``python -m slmfleet.pool.sync``: the pool Pod's repository sidecar.

The pool's ConfigMap is mounted as a directory (kubelet updates it in place, so new
members arrive without a restart). It holds ``members.json`` (``layout``) and each
member's rendered files. For every member whose digest differs from what the
repository holds, the sidecar fetches its artifact (``slmfleet.fetch``) and lays the
member out in a staging directory beside the repository, then renames it into place:
Triton's index never shows half a member, so the operator loads only complete ones.
Members no longer listed are removed (the operator unloads them). An artifact already
fetched for the same URI is moved over, not fetched again, when only the config changed.

Layout: ``<store>/models/<member>/config.pbtxt`` and ``<store>/models/<member>/1/...``
(the artifact in ``1/<subdir>``, ``model.json`` in ``1/``), staging in ``<store>/staging``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ..fetch import DEFAULT_SOURCE_ROOT, FetchError, fetch

log = logging.getLogger("slmfleet.pool.sync")

MANIFEST = "members.json"
MEMBER_MARKER = ".slmfleet-member.json"


def layout(members: dict[str, dict[str, Any]]) -> str:
    """members.json: name -> {uri, subdir, digest, files: {path in the member dir: key
    of the ConfigMap}} (rendered by the operator, read by ``sync_once``)."""
    return json.dumps({"members": members}, indent=1, sort_keys=True) + "\n"


def _marker(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / MEMBER_MARKER).read_text())
    except (OSError, ValueError):
        return {}


def sync_once(
    config: Path, store: Path, *, source_root: Path | str = DEFAULT_SOURCE_ROOT
) -> list[str]:
    """Bring ``store/models`` to ``config/members.json``; return what changed. A member
    whose fetch fails is left as it was (logged) and retried next time."""
    wanted: dict[str, dict[str, Any]] = json.loads((config / MANIFEST).read_text())["members"]
    repo, staging_root = store / "models", store / "staging"
    repo.mkdir(parents=True, exist_ok=True)
    staging_root.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for name, member in sorted(wanted.items()):
        current = repo / name
        if _marker(current).get("digest") == member["digest"]:
            continue
        staging = staging_root / name
        shutil.rmtree(staging, ignore_errors=True)
        weights = staging / "1" / member.get("subdir", "")
        old = _marker(current)
        try:
            if old.get("uri") == member["uri"] and (current / "1").is_dir():
                # Only the config changed: keep the artifact.
                shutil.copytree(current / "1", staging / "1", copy_function=_link)
                for stale in ("model.json",):
                    (staging / "1" / stale).unlink(missing_ok=True)
            else:
                fetch(member["uri"], weights, source_root=_claim_root(member["uri"], source_root))
        except (FetchError, OSError) as exc:
            log.warning("member %s: fetching %s failed: %s", name, member["uri"], exc)
            shutil.rmtree(staging, ignore_errors=True)
            continue
        for path, key in member["files"].items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((config / key).read_text())
        (staging / MEMBER_MARKER).write_text(
            json.dumps({"digest": member["digest"], "uri": member["uri"]})
        )
        if current.exists():
            aside = staging_root / f".{name}.old"
            shutil.rmtree(aside, ignore_errors=True)
            current.rename(aside)
            staging.rename(current)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            staging.rename(current)
        changed.append(name)
    for gone in sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name not in wanted):
        shutil.rmtree(repo / gone, ignore_errors=True)
        changed.append(gone)
    return changed


def _claim_root(uri: str, source_root: Path | str) -> Path:
    """A pool mounts each member's claim at ``<source_root>/<claim>`` (a specialist of its
    own mounts its one claim at the root)."""
    if uri.startswith("pvc://"):
        return Path(source_root) / uri.removeprefix("pvc://").split("/", 1)[0]
    return Path(source_root)


def _link(src: str, dst: str) -> str:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the mounted ConfigMap")
    parser.add_argument("--store", type=Path, required=True, help="the repository volume")
    parser.add_argument("--source-root", type=Path, default=Path(DEFAULT_SOURCE_ROOT))
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    while True:
        try:
            for name in sync_once(args.config, args.store, source_root=args.source_root):
                log.info("member %s laid out", name)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("sync: %s", exc)  # a ConfigMap mid-update: next round
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
