"""``python -m slmfleet.fetch --uri URI --dest DIR``: the model fetcher (an init container).

Fetches one model artifact into DIR, atomically and idempotently:

* the artifact is downloaded into a staging directory and only then moved into place,
  and a completion marker (``.slmfleet-fetched.json``, naming the URI) is written last;
  a failed fetch leaves no marker and no partial files behind;
* when DIR already holds a marker for the same URI nothing is fetched again.

The staging directory sits beside DIR and is renamed over it. When DIR is a mount point
(the Pod's ``/store`` emptyDir) or its parent is not writable (a read-only root
filesystem), staging happens inside DIR and the entries are moved in at the end.

Schemes (the optional clients are imported only when their scheme is used):

``pvc://claim/path``
    The Pod mounts the claim at ``--source-root`` (default ``/source``); ``path`` (a file
    or a directory, relative to the claim's root) is hard-linked when on the same
    filesystem, copied otherwise. Symlinks are never followed: one that resolves inside
    the fetched directory is kept as a (relative) link, any other fails the fetch.
``hf://org/name[@revision]``
    ``huggingface_hub.snapshot_download``; token from ``SLMFLEET_FETCH_TOKEN``.
``s3://bucket/prefix``
    boto3 (credentials and ``AWS_ENDPOINT_URL`` from the usual AWS environment).
``gs://bucket/prefix``
    google-cloud-storage (Application Default Credentials).

For s3:// and gs:// an object key that would land outside DIR (``..`` components, an
absolute path) fails the fetch.
``oci://registry/repo:tag`` or ``oci://registry/repo@sha256:...``
    the ``oras`` CLI (``oras pull``); a token in ``SLMFLEET_FETCH_TOKEN`` is passed on
    stdin, with ``SLMFLEET_FETCH_USERNAME`` as user name when set.

Exit codes: 0 fetched or already there, 1 the fetch failed, 2 bad usage or a missing
client library / CLI (the message names what to install).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path, PurePosixPath

# The URI and error names are the fetcher's public API too (tests and callers use them).
from .artifact_uri import (  # noqa: F401
    DEFAULT_SOURCE_ROOT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    MARKER,
    SCHEMES,
    TOKEN_ENV,
    USERNAME_ENV,
    ArtifactURI,
    FetchError,
    MissingDependency,
    UsageError,
    parse_uri,
    require,
    require_cli,
)

# -- fetchers: each writes the artifact into an empty staging directory ------------------------


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)
    return dst


def _inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both already resolved)."""
    return os.path.commonpath([path, root]) == root


def _raise(exc: OSError) -> None:
    raise exc


def _copy_tree(src: str, dst: Path, where: str) -> None:
    """Copy the resolved directory ``src`` into ``dst`` without following symlinks: a link
    that resolves inside ``src`` is recreated as a relative link, any other is refused."""
    for dirpath, dirnames, filenames in os.walk(src, onerror=_raise):
        out = dst / os.path.relpath(dirpath, src)
        out.mkdir(exist_ok=True)
        dirnames[:] = [d for d in dirnames if d != MARKER]
        for name in [*dirnames, *filenames]:
            if name == MARKER:
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if not _inside(real, src):
                    raise FetchError(
                        f"{where}: refusing symlink {os.path.relpath(path, src)!r}: it points "
                        f"outside the fetched directory (to {real})"
                    )
                os.symlink(os.path.relpath(real, dirpath), out / name)
            elif name in filenames:
                _link_or_copy(path, str(out / name))


def fetch_pvc(uri: ArtifactURI, staging: Path, *, source_root: Path) -> None:
    root = Path(source_root)
    where = f"pvc://{uri.location}/{uri.path}"
    if not root.is_dir():
        raise FetchError(
            f"pvc://{uri.location}: the claim is not mounted at {root} "
            "(the Pod mounts it there; pass --source-root elsewhere)"
        )
    source = root / uri.path if uri.path else root
    if not source.exists():
        raise FetchError(f"{where}: {source} does not exist in the claim")
    real = os.path.realpath(source)
    if not _inside(real, os.path.realpath(root)):
        raise FetchError(f"{where}: {source} is a symlink that points outside the claim ({real})")
    if os.path.isdir(real):
        _copy_tree(real, staging, where)
    else:
        _link_or_copy(real, str(staging / source.name))


def fetch_hf(uri: ArtifactURI, staging: Path) -> None:
    hub = require("huggingface_hub")
    try:
        hub.snapshot_download(
            repo_id=uri.location,
            revision=uri.revision,
            local_dir=str(staging),
            token=os.environ.get(TOKEN_ENV) or None,
        )
    except Exception as exc:
        raise FetchError(f"hf://{uri.location}: download failed: {exc}") from exc
    # snapshot_download keeps its bookkeeping in <local_dir>/.cache; it is not the model.
    shutil.rmtree(staging / ".cache", ignore_errors=True)


def _relative_key(key: str, prefix: str) -> str | None:
    if key.endswith("/"):
        return None  # a "directory" placeholder object
    if key == prefix:
        return PurePosixPath(key).name
    rel = key[len(prefix) :].lstrip("/") if prefix else key
    return rel or None


def _object_target(staging: Path, key: str, rel: str, where: str) -> Path:
    """Where object ``key`` (``rel`` below the prefix) goes; refuses keys that would land
    outside ``staging`` (``..`` components, absolute paths)."""
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise FetchError(f"{where}: refusing object key {key!r}: it is not a path below the prefix")
    target = staging / path
    if not target.resolve().is_relative_to(staging.resolve()):
        raise FetchError(f"{where}: refusing object key {key!r}: it resolves outside the download")
    return target


ObjectListing = Iterable[tuple[str, Callable[[str], object]]]


def _download_prefix(where: str, prefix: str, staging: Path, objects: ObjectListing) -> None:
    """Download every ``(key, download_to(filename))`` of ``objects`` under ``prefix`` into
    ``staging``. ``objects`` is a generator, so client errors surface here as FetchError."""
    count = 0
    try:
        for key, download in objects:
            if prefix and key != prefix and not key.startswith(prefix.rstrip("/") + "/"):
                continue  # prefix "a/b" must not pick up "a/bc"
            rel = _relative_key(key, prefix)
            if rel is None:
                continue
            target = _object_target(staging, key, rel, where)
            target.parent.mkdir(parents=True, exist_ok=True)
            download(str(target))
            count += 1
    except FetchError:
        raise
    except Exception as exc:
        raise FetchError(f"{where}: download failed: {exc}") from exc
    if not count:
        raise FetchError(f"{where}: no objects under this prefix")


def fetch_s3(uri: ArtifactURI, staging: Path) -> None:
    boto3 = require("boto3")

    def objects() -> ObjectListing:
        client = boto3.client("s3")
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=uri.location, Prefix=uri.path):
            for obj in page.get("Contents", []):
                yield obj["Key"], partial(client.download_file, uri.location, obj["Key"])

    _download_prefix(f"s3://{uri.location}/{uri.path}", uri.path, staging, objects())


def fetch_gs(uri: ArtifactURI, staging: Path) -> None:
    storage = require("google.cloud.storage")

    def objects() -> ObjectListing:
        client = storage.Client()
        for blob in client.list_blobs(uri.location, prefix=uri.path or None):
            yield blob.name, blob.download_to_filename

    _download_prefix(f"gs://{uri.location}/{uri.path}", uri.path, staging, objects())


def fetch_oci(uri: ArtifactURI, staging: Path) -> None:
    oras = require_cli("oras", "oci://")
    cmd = [oras, "pull", uri.oci_reference, "--output", str(staging)]
    token = os.environ.get(TOKEN_ENV)
    if token:
        user = os.environ.get(USERNAME_ENV)
        cmd += ["--username", user, "--password-stdin"] if user else ["--identity-token-stdin"]
    result = subprocess.run(cmd, input=token or "", capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise FetchError(f"oci://{uri.oci_reference}: oras pull failed: {detail}")


Fetcher = Callable[[ArtifactURI, Path], None]


def _fetcher(uri: ArtifactURI, source_root: Path) -> Fetcher:
    if uri.scheme == "pvc":
        return lambda u, staging: fetch_pvc(u, staging, source_root=source_root)
    return {"hf": fetch_hf, "s3": fetch_s3, "gs": fetch_gs, "oci": fetch_oci}[uri.scheme]


# -- the atomic, idempotent shell ----------------------------------------------------------


def completed(dest: Path, uri: str) -> bool:
    """DEST holds a finished fetch of ``uri``."""
    try:
        marker = json.loads((Path(dest) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("uri") == uri


def _write_marker(directory: Path, uri: str, files: int) -> None:
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"uri": uri, "files": files, "fetchedAt": int(time.time())}))
    tmp.replace(directory / MARKER)


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file() and p.name != MARKER)


def _stage_beside(dest: Path) -> bool:
    """Stage beside DEST and rename, unless DEST is a mount point or its parent is
    read-only (then stage inside DEST)."""
    if dest.exists() and os.path.ismount(dest):
        return False
    return os.access(dest.parent, os.W_OK)


def fetch(
    uri: str,
    dest: Path | str,
    *,
    source_root: Path | str = DEFAULT_SOURCE_ROOT,
    force: bool = False,
    fetcher: Fetcher | None = None,
) -> bool:
    """Fetch ``uri`` into ``dest``. Returns False when it was already there.

    ``fetcher`` replaces the scheme's fetcher (tests).
    """
    parsed = parse_uri(uri)
    dest = Path(dest).absolute()
    if not force and completed(dest, uri):
        return False
    run = fetcher or _fetcher(parsed, Path(source_root))
    if not dest.parent.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
    if _stage_beside(dest):
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            run(parsed, staging)
            _write_marker(staging, uri, _count_files(staging))
            _swap(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".slmfleet-partial-", dir=dest))
    try:
        run(parsed, staging)
        files = _count_files(staging)
        with contextlib.suppress(FileNotFoundError):
            (dest / MARKER).unlink()  # the old content is no longer complete from here on
        for entry in dest.iterdir():
            if entry != staging:
                _remove(entry)
        for entry in staging.iterdir():
            entry.rename(dest / entry.name)
        _write_marker(dest, uri, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _swap(staging: Path, dest: Path) -> None:
    """Rename ``staging`` to ``dest``; an old ``dest`` is moved aside first, then removed."""
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        dest.rename(old)
    try:
        staging.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)  # put the previous content back
        raise
    if old is not None:
        _remove(old)


# -- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m slmfleet.fetch",
        description="Fetch a model artifact (pvc://, hf://, s3://, gs://, oci://) into a "
        "directory, atomically; skip it when the directory already holds it.",
    )
    p.add_argument("--uri", required=True, help="artifact URI, e.g. hf://org/name@revision")
    p.add_argument("--dest", required=True, help="directory to fetch into")
    p.add_argument(
        "--source-root",
        default=os.environ.get("SLMFLEET_FETCH_SOURCE_ROOT", DEFAULT_SOURCE_ROOT),
        help="where the pvc:// claim is mounted (default /source)",
    )
    p.add_argument("--force", action="store_true", help="fetch even if already complete")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.monotonic()
    try:
        fetched = fetch(args.uri, args.dest, source_root=args.source_root, force=args.force)
    except FetchError as exc:
        print(f"slmfleet-fetch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"slmfleet-fetch: error: {args.uri}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if fetched:
        files = json.loads((Path(args.dest) / MARKER).read_text()).get("files", 0)
        took = time.monotonic() - start
        print(f"slmfleet-fetch: fetched {args.uri} into {args.dest} ({files} files, {took:.1f}s)")
    else:
        print(f"slmfleet-fetch: {args.dest} already holds {args.uri}; nothing to do")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
