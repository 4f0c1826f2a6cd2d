"""The model fetcher: URI parsing, pvc:// end to end on real directories, atomicity,
idempotence and the missing-dependency errors.

No network exists here, so hf://, s3:// and gs:// are never fetched for real: the hf
test drives the real code path with ``snapshot_download`` replaced, and s3/gs/oci are
covered for their error paths only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from slmfleet import fetch as F

# -- parsing -----------------------------------------------------------------------------

PARSED = [
    ("pvc://models/retail/orders", F.ArtifactURI("pvc", "models", "retail/orders")),
    ("pvc://models", F.ArtifactURI("pvc", "models", "")),
    ("pvc://models/a//b/./c/", F.ArtifactURI("pvc", "models", "a/b/c")),
    ("hf://Qwen/Qwen2.5-1.5B-Instruct-AWQ", F.ArtifactURI("hf", "Qwen/Qwen2.5-1.5B-Instruct-AWQ")),
    ("hf://org/name@v1.2", F.ArtifactURI("hf", "org/name", "", "v1.2")),
    ("hf://gpt2@abc123", F.ArtifactURI("hf", "gpt2", "", "abc123")),
    ("s3://bucket/models/x", F.ArtifactURI("s3", "bucket", "models/x")),
    ("s3://bucket", F.ArtifactURI("s3", "bucket", "")),
    ("gs://bucket/a/b.onnx", F.ArtifactURI("gs", "bucket", "a/b.onnx")),
    ("oci://ghcr.io/acme/model:1.0", F.ArtifactURI("oci", "ghcr.io", "acme/model", ":1.0")),
    (
        "oci://localhost:5000/m@sha256:abcd",
        F.ArtifactURI("oci", "localhost:5000", "m", "@sha256:abcd"),
    ),
]


@pytest.mark.parametrize(("uri", "expected"), PARSED, ids=[u for u, _ in PARSED])
def test_parse_uri(uri, expected):
    assert F.parse_uri(uri) == expected


def test_oci_reference_round_trips():
    assert F.parse_uri("oci://ghcr.io/acme/model:1.0").oci_reference == "ghcr.io/acme/model:1.0"
    assert F.parse_uri("oci://r.io/m@sha256:ab").oci_reference == "r.io/m@sha256:ab"


BAD = [
    ("http://example.com/model", "unsupported URI"),
    ("model", "unsupported URI"),
    ("ftp://x/y", "unsupported URI"),
    ("pvc://", "missing or malformed"),
    ("s3:///bucket", "missing or malformed"),
    ("pvc://claim/../etc/passwd", "'..' is not allowed"),
    ("hf://a/b/c", "hf://org/name"),
    ("hf://org/name@", "empty revision"),
    ("oci://ghcr.io", "registry/repository:tag"),
    ("oci://ghcr.io/acme/model", ":tag or @digest"),
]


@pytest.mark.parametrize(("uri", "message"), BAD, ids=[u for u, _ in BAD])
def test_parse_uri_refuses(uri, message):
    with pytest.raises(F.UsageError, match=message.replace(".", r"\.").replace("?", r"\?")):
        F.parse_uri(uri)


# -- pvc:// end to end -------------------------------------------------------------------


@pytest.fixture
def claim(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    model = root / "retail" / "orders"
    (model / "tokenizer").mkdir(parents=True)
    (model / "model.py").write_text("print('hi')\n")
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (root / "single.onnx").write_bytes(b"\x00onnx")
    return root


def _files(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): p.read_text(errors="replace")
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != F.MARKER
    }


def test_pvc_directory_fetch_is_complete_and_marked(tmp_path, claim):
    dest = tmp_path / "store" / "weights"
    assert F.fetch("pvc://models/retail/orders", dest, source_root=claim) is True
    assert _files(dest) == {"model.py": "print('hi')\n", "tokenizer/vocab.txt": "a\nb\n"}
    marker = json.loads((dest / F.MARKER).read_text())
    assert marker["uri"] == "pvc://models/retail/orders" and marker["files"] == 2
    # Same filesystem: hard links, not copies.
    assert (dest / "model.py").stat().st_ino == (claim / "retail/orders/model.py").stat().st_ino
    # No staging debris beside DEST.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights"]


def test_pvc_single_file(tmp_path, claim):
    dest = tmp_path / "d"
    F.fetch("pvc://models/single.onnx", dest, source_root=claim)
    assert _files(dest) == {"single.onnx": "\x00onnx"}


def test_idempotent_same_uri_is_skipped(tmp_path, claim):
    dest = tmp_path / "d"
    assert F.fetch("pvc://models/retail/orders", dest, source_root=claim) is True
    (dest / "model.py").unlink()  # would come back if it were fetched again
    assert F.fetch("pvc://models/retail/orders", dest, source_root=claim) is False
    assert not (dest / "model.py").exists()
    assert F.fetch("pvc://models/retail/orders", dest, source_root=claim, force=True) is True
    assert (dest / "model.py").exists()


def test_a_different_uri_replaces_the_content(tmp_path, claim):
    dest = tmp_path / "d"
    F.fetch("pvc://models/retail/orders", dest, source_root=claim)
    assert F.fetch("pvc://models/single.onnx", dest, source_root=claim) is True
    assert _files(dest) == {"single.onnx": "\x00onnx"}
    assert F.completed(dest, "pvc://models/single.onnx")


def test_failure_leaves_previous_content_and_no_debris(tmp_path, claim):
    dest = tmp_path / "d"
    F.fetch("pvc://models/retail/orders", dest, source_root=claim)

    def half_then_fail(uri, staging):
        (staging / "part-1.bin").write_text("half")
        raise F.FetchError("network went away")

    with pytest.raises(F.FetchError, match="network went away"):
        F.fetch("pvc://models/other", dest, source_root=claim, fetcher=half_then_fail)
    assert F.completed(dest, "pvc://models/retail/orders")
    assert "part-1.bin" not in _files(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "source"]


def test_failure_on_empty_dest_leaves_nothing(tmp_path, claim):
    dest = tmp_path / "fresh"
    with pytest.raises(F.FetchError, match="does not exist in the claim"):
        F.fetch("pvc://models/nope", dest, source_root=claim)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_unmounted_claim_is_a_clear_error(tmp_path):
    with pytest.raises(F.FetchError, match="not mounted at"):
        F.fetch("pvc://models/x", tmp_path / "d", source_root=tmp_path / "missing")


#: An unprivileged user for the read-only-parent test when the suite runs as root (CI):
#: root writes anywhere, so the real os.access fallback is reached only as someone else.
NOBODY = 65534


def _fetch_as(uid: int | None, uri: str, dest: Path, root: Path) -> int:
    """F.fetch in a forked child that first drops to ``uid`` (None: stay); its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            F.fetch(uri, dest, source_root=root)
            code = 0
        except BaseException as exc:  # reported through the exit code and stderr
            print(f"fetch as {uid}: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_read_only_parent_stages_inside_dest(tmp_path, claim):
    parent = tmp_path / "ro"
    dest = parent / "store"
    dest.mkdir(parents=True)
    as_root = os.geteuid() == 0
    if as_root:  # the unprivileged child must reach the claim and own the emptyDir
        for d in (tmp_path, *tmp_path.parents[:2]):
            d.chmod(d.stat().st_mode | 0o005)
        for d in (claim, *claim.rglob("*")):
            d.chmod(d.stat().st_mode | 0o005)
        os.chown(dest, NOBODY, NOBODY)
    parent.chmod(0o555)
    try:
        code = _fetch_as(NOBODY if as_root else None, "pvc://models/retail/orders", dest, claim)
        assert code == 0
        assert _files(dest) == {"model.py": "print('hi')\n", "tokenizer/vocab.txt": "a\nb\n"}
        assert sorted(p.name for p in parent.iterdir()) == ["store"]  # nothing staged beside
    finally:
        parent.chmod(0o755)


def test_inside_dest_staging_when_parent_is_not_writable(tmp_path, claim, monkeypatch):
    """The Pod's /store is an emptyDir mount point under a read-only root: stage inside."""
    dest = tmp_path / "store"
    dest.mkdir()
    (dest / "stale.bin").write_text("old")
    monkeypatch.setattr(F, "_stage_beside", lambda d: False)
    F.fetch("pvc://models/retail/orders", dest, source_root=claim)
    assert _files(dest) == {"model.py": "print('hi')\n", "tokenizer/vocab.txt": "a\nb\n"}
    assert F.completed(dest, "pvc://models/retail/orders")

    def fail(uri, staging):
        (staging / "x").write_text("partial")
        raise F.FetchError("boom")

    with pytest.raises(F.FetchError):
        F.fetch("pvc://models/other", dest, source_root=claim, fetcher=fail)
    assert F.completed(dest, "pvc://models/retail/orders")  # untouched
    assert sorted(p.name for p in dest.iterdir()) == [F.MARKER, "model.py", "tokenizer"]


# -- hf:// plumbing (no network: snapshot_download is replaced) ----------------------------


def test_hf_passes_revision_token_and_drops_bookkeeping(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_snapshot_download(**kw):
        calls.append(kw)
        local = Path(kw["local_dir"])
        (local / ".cache" / "huggingface").mkdir(parents=True)
        (local / "config.json").write_text("{}")
        return str(local)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv(F.TOKEN_ENV, "hf_secret")
    dest = tmp_path / "weights"
    F.fetch("hf://Qwen/Qwen2.5-1.5B-Instruct-AWQ@main", dest)
    assert calls[0]["repo_id"] == "Qwen/Qwen2.5-1.5B-Instruct-AWQ"
    assert calls[0]["revision"] == "main" and calls[0]["token"] == "hf_secret"
    assert _files(dest) == {"config.json": "{}"}


def test_hf_download_error_is_a_fetch_error(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")

    def offline(**kw):
        raise OSError("no route to host")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(F.FetchError, match="hf://org/name: download failed: no route to host"):
        F.fetch("hf://org/name", tmp_path / "d")
    assert not (tmp_path / "d").exists()


# -- s3:// and gs:// object keys (fake clients: the path logic, not the network) -------------


class _FakeS3:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_paginator(self, operation):
        assert operation == "list_objects_v2"
        return self

    def paginate(self, **kw):
        keys = [k for k in self.objects if k.startswith(kw["Prefix"])]
        yield {"Contents": [{"Key": k} for k in keys]}

    def download_file(self, bucket, key, filename):
        Path(filename).write_bytes(self.objects[key])


class _FakeBlob:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data = name, data

    def download_to_filename(self, filename):
        Path(filename).write_bytes(self.data)


class _FakeGCS:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_blobs(self, bucket, prefix=None):
        return [_FakeBlob(k, v) for k, v in self.objects.items() if k.startswith(prefix or "")]


def _fake_bucket(monkeypatch, scheme: str, objects: dict[str, bytes]) -> None:
    if scheme == "s3":
        fake = SimpleNamespace(client=lambda service: _FakeS3(objects))
        monkeypatch.setitem(sys.modules, "boto3", fake)
    else:
        fake = SimpleNamespace(Client=lambda: _FakeGCS(objects))
        monkeypatch.setitem(sys.modules, "google.cloud.storage", fake)


BUCKET_REFUSED = [
    ("traversal", "models/m", {"models/m/ok.bin": b"ok", "models/m/../../escaped": b"x"}),
    ("deep traversal", "models/m", {"models/m/a/../../../../escaped": b"x"}),
    ("bare dot-dot", "", {"../escaped": b"x"}),
    ("absolute key, empty prefix", "", {"{abs}": b"x"}),
]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
@pytest.mark.parametrize(
    ("prefix", "objects"),
    [(p, o) for _, p, o in BUCKET_REFUSED],
    ids=[name for name, _, _ in BUCKET_REFUSED],
)
def test_bucket_keys_outside_the_prefix_are_refused(tmp_path, monkeypatch, scheme, prefix, objects):
    outside = tmp_path / "outside"
    outside.mkdir()
    objects = {k.replace("{abs}", str(outside / "escaped")): v for k, v in objects.items()}
    _fake_bucket(monkeypatch, scheme, objects)
    dest = tmp_path / "a" / "b" / "c" / "weights"
    uri = f"{scheme}://bucket/{prefix}" if prefix else f"{scheme}://bucket"
    bad = next(k for k in objects if ".." in k or k.startswith("/"))
    with pytest.raises(F.FetchError, match="refusing object key") as err:
        F.fetch(uri, dest)
    assert repr(bad) in str(err.value)
    assert [p for p in tmp_path.rglob("*") if p.name == "escaped"] == []
    assert not dest.exists()  # a refused fetch leaves nothing behind either


BUCKET_OK = [
    ("nested keys", "models/m", {"models/m/config.json": b"{}", "models/m/sub/w.bin": b"w"}),
    ("sibling prefix ignored", "models/m", {"models/m/a.bin": b"a", "models/mm/b.bin": b"b"}),
    ("dots inside names", "m", {"m/x..y/w.bin": b"w", "m/./z.bin": b"z", "m/": b""}),
    ("whole bucket", "", {"a/b.bin": b"b", "c.bin": b"c"}),
]
BUCKET_OK_FILES = [
    {"config.json": "{}", "sub/w.bin": "w"},
    {"a.bin": "a"},
    {"x..y/w.bin": "w", "z.bin": "z"},
    {"a/b.bin": "b", "c.bin": "c"},
]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
@pytest.mark.parametrize(
    ("prefix", "objects", "expected"),
    [(p, o, e) for (_, p, o), e in zip(BUCKET_OK, BUCKET_OK_FILES, strict=True)],
    ids=[name for name, _, _ in BUCKET_OK],
)
def test_bucket_keys_below_the_prefix_are_fetched(
    tmp_path, monkeypatch, scheme, prefix, objects, expected
):
    _fake_bucket(monkeypatch, scheme, objects)
    dest = tmp_path / "weights"
    F.fetch(f"{scheme}://bucket/{prefix}" if prefix else f"{scheme}://bucket", dest)
    assert _files(dest) == expected


# -- pvc:// symlinks -------------------------------------------------------------------------


def test_pvc_symlink_to_a_file_outside_the_claim_is_refused(tmp_path, claim):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    (claim / "retail" / "orders" / "tokenizer" / "leak.txt").symlink_to(secret)
    dest = tmp_path / "d"
    with pytest.raises(F.FetchError, match=r"refusing symlink 'tokenizer/leak\.txt'"):
        F.fetch("pvc://models/retail/orders", dest, source_root=claim)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt", "source"]


def test_pvc_symlink_to_a_directory_outside_the_claim_is_refused(tmp_path, claim):
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    (claim / "retail" / "orders" / "etc").symlink_to(outside)
    with pytest.raises(F.FetchError, match="points outside the fetched directory"):
        F.fetch("pvc://models/retail/orders", tmp_path / "d", source_root=claim)
    assert not (tmp_path / "d").exists()


def test_pvc_source_that_is_a_symlink_out_of_the_claim_is_refused(tmp_path, claim):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    (claim / "model.bin").symlink_to(secret)
    with pytest.raises(F.FetchError, match="points outside the claim"):
        F.fetch("pvc://models/model.bin", tmp_path / "d", source_root=claim)
    assert not (tmp_path / "d").exists()


def test_pvc_symlinks_inside_the_tree_stay_relative_links(tmp_path, claim):
    model = claim / "retail" / "orders"
    (model / "vocab.txt").symlink_to(model / "tokenizer" / "vocab.txt")  # absolute, inside
    (model / "tok").symlink_to("tokenizer")  # relative, to a directory
    dest = tmp_path / "d"
    F.fetch("pvc://models/retail/orders", dest, source_root=claim)
    assert os.readlink(dest / "vocab.txt") == "tokenizer/vocab.txt"
    assert os.readlink(dest / "tok") == "tokenizer"
    assert (dest / "vocab.txt").read_text() == "a\nb\n"
    assert (dest / "tok" / "vocab.txt").read_text() == "a\nb\n"


# -- missing dependencies ------------------------------------------------------------------

MISSING = [
    ("hf://org/name", "huggingface_hub", "pip install huggingface_hub"),
    ("s3://bucket/m", "boto3", "pip install boto3"),
    ("gs://bucket/m", "google.cloud.storage", "pip install google-cloud-storage"),
]


@pytest.mark.parametrize(("uri", "module", "hint"), MISSING, ids=[m for _, m, _ in MISSING])
def test_missing_library_names_the_package(tmp_path, monkeypatch, uri, module, hint):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    if module == "google.cloud.storage":
        monkeypatch.setitem(sys.modules, "google.cloud", None)
    with pytest.raises(F.MissingDependency) as err:
        F.fetch(uri, tmp_path / "d")
    assert repr(module) in str(err.value) and hint in str(err.value)
    assert err.value.exit_code == 2
    assert not (tmp_path / "d").exists()


def test_missing_oras_names_the_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(F.shutil, "which", lambda name: None)
    with pytest.raises(F.MissingDependency, match="'oras' command on PATH"):
        F.fetch("oci://ghcr.io/acme/model:1.0", tmp_path / "d")


def test_oci_runs_oras_pull(tmp_path, monkeypatch):
    """A fake ``oras`` on PATH records its arguments and 'pulls' one file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    oras = bin_dir / "oras"
    oras.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        f"cat > {tmp_path}/stdin\n"
        'while [ "$1" != "--output" ]; do shift; done\n'
        'echo weights > "$2/model.bin"\n'
    )
    oras.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(F.TOKEN_ENV, "tok")
    dest = tmp_path / "d"
    F.fetch("oci://ghcr.io/acme/model:1.0", dest)
    args = (tmp_path / "args").read_text().split()
    assert args[:2] == ["pull", "ghcr.io/acme/model:1.0"] and "--identity-token-stdin" in args
    assert (tmp_path / "stdin").read_text() == "tok"
    assert _files(dest) == {"model.bin": "weights\n"}


# -- the command line (python -m slmfleet.fetch) --------------------------------------------


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slmfleet.fetch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_cli_fetch_then_skip(tmp_path, claim):
    dest = tmp_path / "store"
    args = ("--uri", "pvc://models/retail/orders", "--dest", str(dest))
    first = _run(*args, "--source-root", str(claim))
    assert first.returncode == 0, first.stderr
    assert "fetched pvc://models/retail/orders" in first.stdout and "2 files" in first.stdout
    again = _run(*args, env={"SLMFLEET_FETCH_SOURCE_ROOT": str(claim)})
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_cli_exit_codes(tmp_path):
    bad = _run("--uri", "http://x/y", "--dest", str(tmp_path / "d"))
    assert bad.returncode == 2 and "unsupported URI" in bad.stderr
    missing = _run("--uri", "pvc://m/x", "--dest", str(tmp_path / "d"), "--source-root", "/nope")
    assert missing.returncode == 1 and "not mounted at /nope" in missing.stderr
    usage = _run("--dest", str(tmp_path / "d"))
    assert usage.returncode == 2 and "--uri" in usage.stderr
