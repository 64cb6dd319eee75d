"""Fixed image timestamps (release/reproducible.py) on the real local engine.

A small image (the base plus one COPY into /) is built twice with the classic builder and no
cache: the engine gives two ids (build-time ``created`` and container ids). After
``normalize_image`` both are one id, through the small ``docker load`` (config only) and through
the full archive that an engine insisting on every layer gets.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from typing import Any

import docker
import pytest

from release.base_image import DEFAULT_BASE_IMAGE, ensure_base_image
from release.reproducible import _load_full, _saved_members, normalize_image, normalized_config, rfc3339

pytestmark = [pytest.mark.docker]

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("tree", "tree/srv"):  # folders with their (fixed) times, as a real context has
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(folder)
        for name, data in (
            ("Dockerfile", f"FROM {DEFAULT_BASE_IMAGE}\nCOPY tree/ /\nLABEL a=b\n".encode()),
            ("tree/srv/hello.txt", b"hello\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _classic_build(client: docker.DockerClient, tag: str) -> str:
    image, _ = client.images.build(fileobj=_context(), custom_context=True, tag=tag, nocache=True, rm=True)
    return str(image.id)


@pytest.fixture()
def client(local_env: Any) -> docker.DockerClient:
    client = docker.DockerClient(base_url=local_env.docker_host, timeout=600)
    ensure_base_image(client, DEFAULT_BASE_IMAGE)
    return client


def test_two_classic_builds_become_one_image(client: docker.DockerClient) -> None:
    repo = f"genaiops-test/repro-{uuid.uuid4().hex[:8]}"
    first = _classic_build(client, f"{repo}:a")
    time.sleep(1.1)  # another second on the build clock
    second = _classic_build(client, f"{repo}:b")
    assert first != second  # the classic builder alone is not reproducible
    config = json.loads(_saved_members(client, first)["manifest.json"])[0]
    assert config["Layers"]  # a real docker save archive was read

    fixed_a = normalize_image(client, first, f"{repo}:a", EPOCH)
    fixed_b = normalize_image(client, second, f"{repo}:b", EPOCH)
    assert fixed_a == fixed_b
    image = client.images.get(fixed_a)
    assert image.attrs["Created"].startswith(rfc3339(EPOCH)[:-1])
    assert image.labels == {"a": "b"}
    assert next(h["CreatedBy"] for h in image.history()).endswith("LABEL a=b")

    # the full archive (for engines that want every layer) gives the same image
    client.images.remove(f"{repo}:b")
    small = _saved_members(client, second)
    (entry,) = json.loads(small["manifest.json"])
    data = normalized_config(json.loads(small[entry["Config"]]), EPOCH)
    name = f"{fixed_a.split(':')[1]}.json"
    manifest = json.dumps([{**entry, "Config": name, "RepoTags": [f"{repo}:full"]}]).encode()
    _load_full(client, second, entry["Config"], name, data, manifest)
    assert client.images.get(f"{repo}:full").id == fixed_a
    for tag in ("a", "full"):
        client.images.remove(f"{repo}:{tag}", force=True)
