"""What the decision log keeps of a prompt or an answer: nothing, a keyed hash, or the
text cut to a maximum size. Pure functions; they run in the writer's thread."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .settings import ContentPolicy


def content_hash(text: str, key: bytes = b"") -> str:
    """HMAC-SHA256 of the text under the deployment's key (plain SHA-256 without one).

    With a key, a hash cannot be checked against guessed prompts by anyone who lacks
    it; without one, short prompts can be guessed: set SLMFLEET_DECISION_HASH_KEY_FILE.
    """
    data = text.encode("utf-8", "surrogatepass")
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def content_field(text: str | None, policy: ContentPolicy, key: bytes = b"") -> Any:
    """The JSON value stored for one text under ``policy`` (None: store nothing)."""
    if text is None or policy.content == "off":
        return None
    if policy.content == "hashed":
        return {"sha256": content_hash(text, key), "chars": len(text)}
    cut = len(text) > policy.max_chars
    return {"text": text[: policy.max_chars], "chars": len(text), "cut": cut}
