"""The flow image's base: the official Python image pinned by digest, or a local Debian one.

Two paths, chosen by :func:`base_image_for`:

* **Hosted** (a registry of base images is reachable, as on Microsoft- and GitHub-hosted
  agents): :data:`OFFICIAL_BASE_IMAGE`, the official ``python`` image pinned by digest. The
  engine pulls it; nothing needs root. ``$GENAIOPS_BASE_IMAGE`` points it at a mirror (e.g. a
  pull-through cache or ACR import of the same digest).
* **Offline** (Docker Hub and MCR cannot be reached, as on this project's test machines):
  ``debootstrap --variant=minbase`` builds a Debian bookworm root file system with Python 3.11,
  imported into the engine with ``docker import`` as :data:`DEFAULT_BASE_IMAGE`. This needs
  root (debootstrap). The root file system tarball is cached (``~/.cache/genaiops/base/``) so
  that a pruned engine imports it again in seconds instead of bootstrapping for a minute.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

from release.config import EnvironmentConfig
from release.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BASE_IMAGE = "genaiops/base-python:bookworm"
# The official Python image (Docker Official Images, library/python), tag 3.11.14-slim-bookworm,
# pinned by the digest of its multi-architecture index as published on Docker Hub in Nov 2026
# (https://hub.docker.com/_/python). To move it: `skopeo inspect --raw
# docker://docker.io/library/python:<tag> | sha256sum` gives the index digest; change it here only.
OFFICIAL_BASE_IMAGE = (
    "python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"
)
BASE_IMAGE_ENV = "GENAIOPS_BASE_IMAGE"
SUITE = "bookworm"
MIRROR = os.environ.get("GENAIOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("ca-certificates", "python3", "python3-venv", "python3-pip")
BOOTSTRAP_TIMEOUT_S = 900
APT_TIMEOUT_S = 600
# Image config applied on import: a plain rootfs tarball carries none.
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)


class BaseImageError(UserError):
    """The base image could not be made; the message says what to install or set."""


def base_image_for(cfg: EnvironmentConfig, override: str | None = None) -> str:
    """The base image a build of ``cfg`` uses, first match wins:

    1. ``override`` (``genaiops build --base-image``);
    2. ``$GENAIOPS_BASE_IMAGE``;
    3. ``local.base_image`` when the config sets it (config/local.yaml does);
    4. the bootstrapped :data:`DEFAULT_BASE_IMAGE` for ``kind: local``, the pinned
       :data:`OFFICIAL_BASE_IMAGE` for every other kind (built on hosted agents).
    """
    if override:
        return override
    from_env = os.environ.get(BASE_IMAGE_ENV, "").strip()
    if from_env:
        return from_env
    if cfg.local is not None and "base_image" in cfg.local.model_fields_set:
        return cfg.local.base_image
    return DEFAULT_BASE_IMAGE if cfg.kind == "local" else OFFICIAL_BASE_IMAGE


def is_bootstrapped(name: str) -> bool:
    """True for the names this module makes with debootstrap (``genaiops/base-python:*``)."""
    return name.startswith("genaiops/base-python")


def cache_dir() -> Path:
    root = os.environ.get("GENAIOPS_CACHE_DIR") or os.path.join(Path.home(), ".cache", "genaiops")
    return Path(root) / "base"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _ensure_debootstrap() -> str:
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None
    )
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BaseImageError(
            "debootstrap is missing and cannot be installed here (needs root on Debian/Ubuntu): "
            "install it with 'apt-get install -y debootstrap', or set local.base_image in "
            "config/local.yaml to an image your engine already has"
        )
    log.info("installing debootstrap with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "debootstrap"], check=True, env=env, timeout=APT_TIMEOUT_S
    )
    return "/usr/sbin/debootstrap"


def bootstrap_rootfs_tar(target: Path) -> Path:
    """Run debootstrap and write the root file system as a tarball at ``target``."""
    if os.geteuid() != 0:
        raise BaseImageError(
            "bootstrapping the base image needs root (debootstrap); run as root or set "
            "local.base_image in config/local.yaml to an image your engine already has"
        )
    debootstrap = _ensure_debootstrap()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genaiops-rootfs-", dir=target.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            MIRROR,
        ]
        log.info("bootstrapping %s base file system (about a minute)", SUITE)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BOOTSTRAP_TIMEOUT_S)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise BaseImageError(f"debootstrap failed (exit {proc.returncode}); mirror {MIRROR}:\n{tail}")
        # Slimmer image: no apt lists, caches or docs are needed at run time.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            path = rootfs / sub
            if path.is_dir():
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        partial = target.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
            check=True,
            timeout=BOOTSTRAP_TIMEOUT_S,
        )
        partial.replace(target)  # atomic: a half-written tarball is never used
    return target


def ensure_base_image(client: docker.DockerClient, name: str = DEFAULT_BASE_IMAGE) -> str:
    """Make sure ``name`` exists in the engine; bootstrap and import it when it does not.

    Only names under ``genaiops/`` are bootstrapped; any other missing base image is an error
    (it is expected to come from a registry the engine can pull from).
    """
    if image_exists(client, name):
        return name
    if not is_bootstrapped(name):
        try:
            client.images.pull(name)
            return name
        except docker.errors.APIError as exc:
            raise BaseImageError(
                f"base image {name!r} is not in the engine and cannot be pulled ({exc.explanation}); "
                f"offline, use the bootstrapped {DEFAULT_BASE_IMAGE!r} (local.base_image in "
                f"config/<env>.yaml, ${BASE_IMAGE_ENV} or --base-image)"
            ) from None
    tarball = cache_dir() / f"{_slug(name)}.tar"
    if not tarball.is_file():
        bootstrap_rootfs_tar(tarball)
    repository, _, tag = name.rpartition(":")
    if not repository:
        repository, tag = name, "latest"
    log.info("importing %s from %s", name, tarball)
    client.api.import_image_from_file(
        str(tarball), repository=repository, tag=tag, changes=list(IMPORT_CHANGES)
    )
    if not image_exists(client, name):
        raise BaseImageError(f"docker import of {tarball} did not produce {name!r}")
    return name
