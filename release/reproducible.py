"""Give a built image fixed timestamps so that the same sources always give the same image digest.

Docker's classic builder (the one the docker SDK drives: ``POST /build``) stamps the image
config with the build time (``created``, every ``history[].created``) and the id of its build
container (``container``, ``container_config``). With the layers made reproducible by our
Dockerfile (no RUN step in the final stage, normalized file times), these fields are the only
difference between two builds of the same sources. :func:`normalize_image` rewrites them:

* ``created`` and each ``history[].created`` become ``SOURCE_DATE_EPOCH``
  (https://reproducible-builds.org/specs/source-date-epoch/; we use the commit time),
* ``container``, ``container_config`` and ``docker_version`` are dropped and ``config.Image``
  (the id of the builder's intermediate parent image) is emptied: build-host facts,

and loads the result back into the engine under the same tag. Nothing else changes: same
layers (diff ids), same runtime config, labels and history text.

Why not BuildKit: BuildKit applies ``SOURCE_DATE_EPOCH`` itself (v0.11+) and rewrites layer
times (``rewrite-timestamp``, v0.13+), but the docker SDK cannot drive BuildKit (it needs the
gRPC session of ``docker buildx``), Debian 12's engine (docker.io 20.10) bundles BuildKit 0.8,
and ``docker-buildx`` is not packaged there. The classic builder plus this step gives the same
digest on both.

The engine gets a small ``docker load`` archive holding only the new config and
``manifest.json``: it registers the image without reading layers it already has (all of them:
they are the build's). An engine that insists on every layer (the containerd image store)
gets the full ``docker save`` stream with the config replaced (slower, same result).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
import time
from typing import Any

import docker
import docker.errors

from release.errors import UserError

log = logging.getLogger(__name__)

NORMALIZATION_VERSION = 2  # bump when normalized_config changes (builds remember its results)
SMALL_MEMBER_BYTES = 1 << 20  # configs and manifest.json are far below this
DROPPED_FIELDS = ("container", "container_config", "docker_version")


class ReproducibilityError(UserError):
    """An image could not be given fixed timestamps; the message names the image and the step."""


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def normalized_config(config: dict[str, Any], epoch: int) -> bytes:
    """The image config with build-time facts replaced; canonical JSON bytes (sorted keys)."""
    out = {k: v for k, v in config.items() if k not in DROPPED_FIELDS}
    if isinstance(out.get("config"), dict) and out["config"].get("Image"):
        out["config"] = {**out["config"], "Image": ""}  # the builder's intermediate parent id
    out["created"] = rfc3339(epoch)
    out["history"] = [{**entry, "created": rfc3339(epoch)} for entry in config.get("history") or []]
    return json.dumps(out, sort_keys=True, separators=(",", ":")).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _saved_members(client: docker.DockerClient, image_id: str) -> dict[str, bytes]:
    """The small files (manifest.json, configs) of ``docker save``; layer bytes are skipped."""
    stream = client.api.get_image(image_id)
    reader = _ChunkReader(stream)
    small: dict[str, bytes] = {}
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.size <= SMALL_MEMBER_BYTES:
                fh = tar.extractfile(member)
                if fh is not None:
                    small[member.name] = fh.read()
    return small


class _ChunkReader(io.RawIOBase):
    """A file object over the docker SDK's chunk iterator (for ``tarfile`` streaming)."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def normalize_image(client: docker.DockerClient, image_id: str, reference: str, epoch: int) -> str:
    """Load ``image_id`` again with its timestamps set to ``epoch`` and tag it ``reference``.

    Returns the new image id (``sha256:<hex>`` of the new config). Raises
    :class:`ReproducibilityError` when the engine refuses both archives.
    """
    small = _saved_members(client, image_id)
    try:
        (entry,) = json.loads(small["manifest.json"])
        config = json.loads(small[entry["Config"]])
    except (KeyError, ValueError) as exc:
        raise ReproducibilityError(
            f"docker save of {reference} has no readable manifest.json/config ({exc}); "
            "is the engine a Docker engine?"
        ) from None
    data = normalized_config(config, epoch)
    new_id = "sha256:" + hashlib.sha256(data).hexdigest()
    name = f"{new_id.split(':', 1)[1]}.json"
    manifest = json.dumps([{**entry, "Config": name, "RepoTags": [reference]}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, name, data)
        _add(tar, "manifest.json", manifest)
    try:
        _load(client, buffer.getvalue())
        if _loaded_id(client, reference) != new_id:
            raise ReproducibilityError(f"{reference} is not {new_id} after docker load")
    except (docker.errors.APIError, ReproducibilityError) as exc:
        log.info("engine wants every layer in docker load (%s); sending the full archive", exc)
        _load_full(client, image_id, entry["Config"], name, data, manifest)
    loaded = _loaded_id(client, reference)
    if loaded != new_id:
        raise ReproducibilityError(f"{reference} loaded as {loaded}, expected {new_id}")
    return new_id


def _loaded_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        return str(client.images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def _load(client: docker.DockerClient, archive: bytes | Any) -> None:
    """``POST /images/load``; its stream reports errors as ``error`` or (HTTP 500) ``message``."""
    for chunk in client.api.load_image(archive):
        if isinstance(chunk, dict) and (chunk.get("error") or ("message" in chunk and "stream" not in chunk)):
            raise ReproducibilityError(str(chunk.get("error") or chunk.get("message")).strip())


def _load_full(
    client: docker.DockerClient, image_id: str, old_config: str, name: str, data: bytes, manifest: bytes
) -> None:
    with tempfile.TemporaryFile() as out:
        with (
            tarfile.open(fileobj=_ChunkReader(client.api.get_image(image_id)), mode="r|") as src,
            tarfile.open(fileobj=out, mode="w") as dst,
        ):
            for member in src:
                if member.name in (old_config, "manifest.json"):
                    continue
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            _add(dst, name, data)
            _add(dst, "manifest.json", manifest)
        out.seek(0)
        _load(client, out)
