"""Registry reads and copies through ``skopeo`` (Debian package ``skopeo``), never our own client.

* :func:`inspect` reads an image's manifest digest and labels (manifest and config only; no
  layer is downloaded).
* :func:`copy` copies one image by digest to another repository or registry:
  ``skopeo copy --all --preserve-digests docker://src@sha256:... docker://dst:tag``. The
  manifest bytes are kept, so the destination digest is the source digest.
* :func:`list_tags` lists a repository's tags.

Local registries (``127.0.0.1``/``localhost``) are plain HTTP (``--tls-verify=false``); every
other registry is HTTPS with verification. Sign-in is an auth file (``--authfile``, mode 0600,
removed after the call): credentials never appear on a command line. Every call has a time
limit (``--command-timeout`` and a process timeout).

Reference: https://github.com/containers/skopeo/tree/main/docs (skopeo-copy, skopeo-inspect,
skopeo-list-tags). Signature policy: copies run with ``--insecure-policy`` (the policy would
accept anything, as Debian's default ``/etc/containers/policy.json`` does); what we rely on is
the pinned digest, which is content-addressed, and the labels checked after each copy.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from release.errors import UserError
from release.local_env.packages import ensure_binary

TIMEOUT_S = 900
INSPECT_TIMEOUT_S = 120
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(UserError):
    """A registry read or copy failed; the message names the image and what to check."""


@dataclass(frozen=True)
class Credentials:
    """User name and password (or token) for one registry host; never logged."""

    host: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ImageInfo:
    reference: str  # what was inspected
    digest: str  # the manifest digest the registry serves
    labels: dict[str, str]


def is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in {"127.0.0.1", "localhost", "[::1]"}


def host_of(reference: str) -> str:
    return reference.split("/", 1)[0]


def _log(line: str) -> None:
    pass


@contextmanager
def _authfile(credentials: list[Credentials]) -> Iterator[Path | None]:
    """A containers-auth.json (``{"auths": {host: {"auth": base64(user:password)}}}``), 0600."""
    if not credentials:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="genaiops-auth-") as tmp:
        path = Path(tmp) / "auth.json"
        auths = {
            c.host: {"auth": base64.b64encode(f"{c.username}:{c.password}".encode()).decode()}
            for c in credentials
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"auths": auths}, fh)
        yield path


def _run(
    command: str,
    options: list[str],
    references: list[str],
    what: str,
    timeout_s: float,
    credentials: list[Credentials],
    global_options: tuple[str, ...] = (),
) -> str:
    binary = ensure_binary("skopeo", _log)
    with _authfile(credentials) as auth:
        argv = [binary, "--command-timeout", f"{int(timeout_s)}s", *global_options, command, *options]
        if auth is not None:
            argv.append(f"--authfile={auth}")
        argv.extend(f"docker://{ref}" for ref in references)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, check=False)
        except subprocess.TimeoutExpired:
            raise RegistryError(f"{what}: skopeo did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise RegistryError(f"{what}: {_hint(detail[0])}")
    return proc.stdout


def _hint(message: str) -> str:
    lowered = message.lower()
    if "manifest unknown" in lowered or "not found" in lowered:
        return f"{message} (was it pushed? promote by the digest in the push record)"
    if "unauthorized" in lowered or "denied" in lowered or "401" in lowered or "403" in lowered:
        return f"{message} (the identity needs AcrPull on the source and AcrPush on the destination)"
    if "connection refused" in lowered or "no such host" in lowered or "timeout" in lowered:
        return f"{message} (is the registry running and reachable?)"
    return message


def _tls(reference: str, option: str = "--tls-verify") -> str:
    return f"{option}={'false' if is_local(host_of(reference)) else 'true'}"


def inspect(reference: str, credentials: list[Credentials] | None = None) -> ImageInfo:
    """Digest and labels of ``reference`` (``host/repo:tag`` or ``host/repo@sha256:...``)."""
    out = _run(
        "inspect",
        [_tls(reference)],
        [reference],
        f"reading {reference}",
        INSPECT_TIMEOUT_S,
        credentials or [],
    )
    data = json.loads(out)
    labels = {str(k): str(v) for k, v in (data.get("Labels") or {}).items()}
    digest = str(data.get("Digest") or "")
    if not DIGEST_RE.match(digest):
        raise RegistryError(f"reading {reference}: the registry reported no sha256 digest ({digest!r})")
    return ImageInfo(reference=reference, digest=digest, labels=labels)


def list_tags(repository: str, credentials: list[Credentials] | None = None) -> list[str]:
    """Tags of ``host/repo`` (empty when the repository does not exist)."""
    try:
        out = _run(
            "list-tags",
            [_tls(repository)],
            [repository],
            f"listing tags of {repository}",
            INSPECT_TIMEOUT_S,
            credentials or [],
        )
    except RegistryError as exc:
        if "not found" in str(exc).lower() or "unknown" in str(exc).lower():
            return []
        raise
    return [str(t) for t in json.loads(out).get("Tags") or []]


def copy(source: str, destination: str, credentials: list[Credentials] | None = None) -> None:
    """Copy ``source`` (``host/repo@sha256:...``) to ``destination`` (``host/repo:tag``),
    keeping the digest. Raises :class:`RegistryError` for a source not pinned by digest."""
    digest = source.rpartition("@")[2]
    if not DIGEST_RE.match(digest):
        raise RegistryError(
            f"{source!r} is not pinned by a sha256 digest (host/repo@sha256:<64 hex>); "
            "promote by digest, not by tag"
        )
    _run(
        "copy",
        [
            "--all",
            "--preserve-digests",
            "--retry-times=2",
            _tls(source, "--src-tls-verify"),
            _tls(destination, "--dest-tls-verify"),
        ],
        [source, destination],
        f"copying {source} to {destination}",
        TIMEOUT_S,
        credentials or [],
        global_options=("--insecure-policy",),
    )
