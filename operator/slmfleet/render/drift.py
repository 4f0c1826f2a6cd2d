"""Decide whether a child needs a server-side apply: the "no write when nothing
changed" rule. A child is rewritten when what we want changed since our last apply
(the hash annotation) or when someone edited a field we manage (drift)."""

from __future__ import annotations

from typing import Any

from .hashing import content_hash
from .labels import APPLIED_HASH_ANNOTATION


def stamp(desired: dict[str, Any]) -> dict[str, Any]:
    """The desired object with the hash of itself in an annotation."""
    meta = desired["metadata"]
    annotations = {**meta.get("annotations", {}), APPLIED_HASH_ANNOTATION: content_hash(desired)}
    return {**desired, "metadata": {**meta, "annotations": annotations}}


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` has the same value in ``live``.

    The server adds defaults (extra keys) and normalises quantities (1 -> "1"), so
    this is a subset test with scalars compared as text.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    return live == desired or str(live) == str(desired)


def needs_apply(stamped: dict[str, Any], live: dict[str, Any] | None) -> bool:
    if live is None:
        return True
    want = stamped["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    have = live.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH_ANNOTATION)
    return have != want or not contains(live, stamped)
