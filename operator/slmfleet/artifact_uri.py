"""Model artifact URIs and the fetcher's errors, pure: what ``slmfleet.fetch`` accepts.

Parsing is separate from fetching so that the operator and the router can check a URI
(and name what is wrong) without the fetcher's I/O; ``fetch`` re-exports these names.
Standard library only, like the fetcher.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

MARKER = ".slmfleet-fetched.json"
TOKEN_ENV = "SLMFLEET_FETCH_TOKEN"
USERNAME_ENV = "SLMFLEET_FETCH_USERNAME"
DEFAULT_SOURCE_ROOT = "/source"
SCHEMES = ("pvc", "hf", "s3", "gs", "oci")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class FetchError(Exception):
    """The artifact could not be fetched (exit code 1)."""

    exit_code = EXIT_FAILED


class UsageError(FetchError):
    """The URI or the arguments are wrong (exit code 2)."""

    exit_code = EXIT_USAGE


class MissingDependency(FetchError):
    """A scheme's client library or CLI is not installed (exit code 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ArtifactURI:
    """A parsed model URI. ``location`` is the bucket, claim, repo id or registry."""

    scheme: str
    location: str
    path: str = ""
    revision: str | None = None

    @property
    def oci_reference(self) -> str:
        """``registry/repo:tag`` (or ``@digest``) as oras expects it."""
        ref = f"{self.location}/{self.path}" if self.path else self.location
        return ref if self.revision is None else f"{ref}{self.revision}"


def _clean_path(raw: str, uri: str) -> str:
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", "/", ".")]
    if ".." in parts:
        raise UsageError(f"{uri}: '..' is not allowed in the path")
    return "/".join(parts)


def parse_uri(uri: str) -> ArtifactURI:
    """Split a model URI; raises UsageError naming what is wrong."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise UsageError(
            f"{uri!r}: unsupported URI; expected one of " + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if not rest or rest.startswith("/") or any(c.isspace() for c in rest):
        raise UsageError(f"{uri!r}: missing or malformed location after {scheme}://")
    if scheme == "hf":
        repo, _, revision = rest.partition("@")
        repo = repo.strip("/")
        if "@" in uri.partition("://")[2] and not revision:
            raise UsageError(f"{uri!r}: empty revision after '@'")
        segments = repo.split("/")
        if len(segments) > 2 or not all(segments):
            raise UsageError(f"{uri!r}: expected hf://org/name[@revision]")
        return ArtifactURI("hf", repo, "", revision or None)
    if scheme == "oci":
        location, _, path = rest.partition("/")
        if not path:
            raise UsageError(f"{uri!r}: expected oci://registry/repository:tag")
        revision: str | None = None
        if "@" in path:
            path, digest = path.split("@", 1)
            revision = "@" + digest
        else:
            last = path.rsplit("/", 1)[-1]
            if ":" in last:
                path, tag = path.rsplit(":", 1)
                revision = ":" + tag
        if not revision or len(revision) < 2:
            raise UsageError(f"{uri!r}: an OCI reference needs a :tag or @digest")
        return ArtifactURI("oci", location, path.strip("/"), revision)
    location, _, path = rest.partition("/")
    return ArtifactURI(scheme, location, _clean_path(path, uri))


# -- optional dependencies -----------------------------------------------------------------

_INSTALL_HINT = {
    "huggingface_hub": ("hf://", "pip install huggingface_hub"),
    "boto3": ("s3://", "pip install boto3"),
    "google.cloud.storage": ("gs://", "pip install google-cloud-storage"),
}


def require(module: str) -> Any:
    """Import ``module`` or raise MissingDependency naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        scheme, hint = _INSTALL_HINT.get(module, ("this scheme", f"pip install {module}"))
        raise MissingDependency(
            f"{scheme} URIs need the Python package {module!r}, which is not installed "
            f"({hint}; the slmfleet fetcher image ships it)"
        ) from exc


def require_cli(name: str, scheme: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependency(
            f"{scheme} URIs need the {name!r} command on PATH, which was not found "
            f"(install it from its release packages; the slmfleet fetcher image ships it)"
        )
    return path
