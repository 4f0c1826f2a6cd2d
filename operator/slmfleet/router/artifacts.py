"""What the router reads from a model artifact: an ONNX classifier's tokenizer and labels.

The router tokenizes for ONNX classifiers (Triton's onnxruntime backend takes token
ids), with the tokenizer the model was trained with: ``tokenizer.json`` in the model's
artifact, read by the ``tokenizers`` library. Labels come from the specialist's
``domain.labels`` or else from the artifact's ``config.json`` (``id2label``, the
Hugging Face convention).

Where artifacts are readable: ``pvc://<claim>/<path>`` of a specialist in namespace
``<ns>`` is ``<root>/<ns>/<claim>/<path>`` under ``--artifact-root`` (in a cluster, a
volume mounted into the router holding the classifiers' model folders, laid out by
namespace so one tenant's URI never reads another's; ``slmfleet up`` and the tests
write such a folder). The router fetches nothing over the network: a tenant's URI never
makes the router connect anywhere. Any other scheme is refused with a message that
says so. Loads are cached by path and modification time, and run off the event loop
(``classifier`` is synchronous; callers use ``asyncio.to_thread``).

Confinement is checked on resolved paths against ``<root>/<ns>``, not the root: a
symlink in one namespace's folder (the folder, ``tokenizer.json`` or ``config.json``)
must not read another namespace's artifact. Files are read only up to a size cap
(:data:`MAX_TOKENIZER_BYTES`, :data:`MAX_CONFIG_BYTES`): a tenant's file is parsed in
the router's memory.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

#: Longest token sequence sent to a classifier (BERT-style models take 512).
MAX_CLASSIFIER_TOKENS = 512
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
#: Largest tokenizer.json read (BERT's is ~0.7 MB, multilingual ones ~17 MB).
MAX_TOKENIZER_BYTES = 64 << 20
#: Largest config.json read (labels only).
MAX_CONFIG_BYTES = 1 << 20


class ArtifactUnavailable(RuntimeError):
    """The artifact (or the file wanted from it) cannot be read here; says why."""


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` truncated to ``max_length``: the ``Tokenizer`` the
    ONNX codec wants (ids, attention mask, token type ids)."""

    def __init__(self, path: Path, max_length: int = MAX_CLASSIFIER_TOKENS) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # the router image installs the embed extra
            raise ArtifactUnavailable("the 'tokenizers' package is not installed") from exc
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ArtifactUnavailable(f"{path.name} is not a tokenizers file: {exc}") from exc
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)

    def encode(self, text: str) -> tuple[list[int], list[int], list[int]]:
        enc = self._tok.encode(text)
        return list(enc.ids), list(enc.attention_mask), list(enc.type_ids)


@dataclass(frozen=True)
class ClassifierParts:
    tokenizer: HFTokenizer
    labels: tuple[str, ...]


def artifact_path(uri: str, root: Path | None, namespace: str) -> Path:
    """The local folder of ``uri`` for a specialist of ``namespace``, or
    ArtifactUnavailable saying why there is none."""
    if not uri.startswith("pvc://"):
        raise ArtifactUnavailable(
            f"{uri}: the router reads classifier tokenizers only from pvc:// artifacts "
            "under --artifact-root (it never fetches over the network)"
        )
    if root is None:
        raise ArtifactUnavailable(f"{uri}: no --artifact-root is set, so pvc:// is unreadable")
    rel = PurePosixPath(uri.removeprefix("pvc://"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArtifactUnavailable(f"{uri}: the path must stay inside its claim")
    if not namespace or "/" in namespace or namespace in (".", ".."):
        raise ArtifactUnavailable(f"{uri}: no namespace to read it in")
    path = root / namespace / rel
    if not path.resolve().is_relative_to((root / namespace).resolve()):
        raise ArtifactUnavailable(f"{uri}: the path leaves the namespace's artifact folder")
    if not path.is_dir():
        raise ArtifactUnavailable(f"{uri}: {path} is not a folder")
    return path


def confined_file(folder: Path, name: str, within: Path, max_bytes: int) -> Path | None:
    """``folder/name`` if it is a file, None if absent; ArtifactUnavailable if it
    resolves outside ``within`` (a symlink) or is larger than ``max_bytes``."""
    path = folder / name
    if not path.is_file():
        return None
    if not path.resolve().is_relative_to(within.resolve()):
        raise ArtifactUnavailable(f"{name}: leaves the namespace's artifact folder")
    size = path.stat().st_size
    if size > max_bytes:
        raise ArtifactUnavailable(f"{name} is {size} bytes; at most {max_bytes} are read")
    return path


def labels_from_config(folder: Path, within: Path | None = None) -> tuple[str, ...]:
    """``id2label`` of ``config.json``, ordered by class index; () when absent."""
    cfg = confined_file(folder, CONFIG_FILE, within or folder, MAX_CONFIG_BYTES)
    if cfg is None:
        return ()
    try:
        data = json.loads(cfg.read_text())
        id2label = {int(k): str(v) for k, v in (data.get("id2label") or {}).items()}
    except (ValueError, AttributeError) as exc:
        raise ArtifactUnavailable(f"{cfg.name}: unreadable id2label: {exc}") from exc
    if sorted(id2label) != list(range(len(id2label))):
        raise ArtifactUnavailable(f"{cfg.name}: id2label must number classes 0..n-1")
    return tuple(id2label[i] for i in range(len(id2label)))


class ArtifactReader:
    """Loads (and caches) classifier parts from artifacts under one root."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self._cache: dict[tuple[str, int, tuple[str, ...]], ClassifierParts] = {}
        self._lock = threading.Lock()

    def classifier(
        self, uri: str | None, namespace: str, labels: tuple[str, ...] = ()
    ) -> ClassifierParts:
        if not uri:
            raise ArtifactUnavailable("the specialist's router config names no artifact")
        folder = artifact_path(uri, self.root, namespace)
        assert self.root is not None  # artifact_path refuses None
        within = self.root / namespace
        tok = confined_file(folder, TOKENIZER_FILE, within, MAX_TOKENIZER_BYTES)
        if tok is None:
            raise ArtifactUnavailable(f"{uri}: no {TOKENIZER_FILE} in the artifact")
        key = (str(tok), tok.stat().st_mtime_ns, labels)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        parts = ClassifierParts(HFTokenizer(tok), labels or labels_from_config(folder, within))
        if not parts.labels:
            raise ArtifactUnavailable(
                f"{uri}: no labels: set domain.labels or ship config.json with id2label"
            )
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != key[0]}
            self._cache[key] = parts
        return parts
