"""The hosted-agent build path: a NON-ROOT user builds a flow image through the engine's socket,
on an "official" Python base pulled by digest from a registry.

Hosted agents (Azure DevOps / GitHub ``ubuntu-24.04``) run as a non-root user in the ``docker``
group, and reach Docker Hub, so the base there is ``release.base_image.OFFICIAL_BASE_IMAGE``
(``python:3.11.14-slim-bookworm@sha256:...``). Docker Hub is unreachable here, so the test
stands one in, in our own local registry: the bootstrapped Debian base with ``python3`` only in
``/usr/local/bin`` (as in the official image; no ``/usr/bin/python3``), pushed as
``<registry>/library/python:3.11-slim-bookworm`` and referenced by its digest.

Then a throw-away user (no root, no sudo) gets the local engine's socket (a hard link of it,
group-owned by the user's group) and builds with ``release.image.build_image``; the image is
run and must serve.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from release import skopeo
from release.base_image import DEFAULT_BASE_IMAGE, ensure_base_image
from release.config import REPO_ROOT
from release.image import image_requirements, wheel_cache
from release.local_env.net import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a throw-away user: needs root to set up"),
    pytest.mark.skipif(
        not os.path.exists(SYSTEM_PYTHON) or sys.version_info[:2] != (3, 11),
        reason="needs a system Python 3.11 that the throw-away user may run",
    ),
]

FIXTURE_FLOW = Path(__file__).parent / "fixtures" / "tiny_flow"
KEY_ENV = "TINY_CONN_API_KEY"
BUILD_TIMEOUT_S = 1500
WAIT_S = 90

# run as the user: build the tiny flow on the given base and print what was built
BUILD_SCRIPT = """
import json, os, sys
from pathlib import Path
import docker
from release.config import Connection
from release.image import ImageSpec, build_image
conn = Connection.model_validate({"name": "tiny_conn", "category": "OpenAI",
    "target": "http://127.0.0.1:9/v1", "secret": {"env": "LOCAL_MODEL_API_KEY"}})
spec = ImageSpec(flow="tiny", flow_dir=Path(sys.argv[1]), repository=sys.argv[2], tag="hosted",
    base_image=sys.argv[3], connections=(conn,), connection_overrides={"local_openai": "tiny_conn"})
client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=900)
built = build_image(client, spec, Path(sys.argv[4]))
print(json.dumps({"uid": os.geteuid(), "image_id": built.image_id, "reference": built.reference,
    "labels": built.labels}))
"""


@dataclass(frozen=True)
class HostedBuild:
    client: docker.DockerClient
    base: str
    result: dict[str, Any]


@pytest.fixture(scope="module")
def official_base(local_env: Any) -> str:
    """The stand-in official image in the local registry, as ``host/repo@sha256:...``."""
    client = docker.DockerClient(base_url=local_env.docker_host, timeout=600)
    ensure_base_image(client, DEFAULT_BASE_IMAGE)
    name = f"{local_env.registry}/library/python"
    dockerfile = (
        f"FROM {DEFAULT_BASE_IMAGE}\n"
        "RUN rm /usr/bin/python3 && ln -s /usr/bin/python3.11 /usr/local/bin/python3\n"
    )
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{name}:3.11-slim-bookworm", rm=True)
    for chunk in client.api.push(name, tag="3.11-slim-bookworm", stream=True, decode=True):
        assert "error" not in chunk, chunk
    digest = skopeo.inspect(f"{name}:3.11-slim-bookworm").digest
    client.images.remove(f"{name}:3.11-slim-bookworm")  # the build must pull it, by digest
    return f"{name}@{digest}"


@pytest.fixture(scope="module")
def hosted(local_env: Any, official_base: str) -> Iterator[HostedBuild]:
    """Create the user, lend it the engine socket, build as that user; undo it all after."""
    user = f"gaci{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", user], check=True)
    home = Path(pwd.getpwnam(user).pw_dir)
    uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
    socket = Path(local_env.docker_host.removeprefix("unix://"))
    before = socket.stat()
    lent = Path(tempfile.mkdtemp(prefix="gaci-sock-", dir=socket.parent.parent))
    try:
        # the engine's own folder stays 0700; the user reaches the socket through a hard link
        os.chown(lent, 0, gid)
        lent.chmod(0o750)
        os.link(socket, lent / "docker.sock")
        os.chown(lent / "docker.sock", before.st_uid, gid)
        (lent / "docker.sock").chmod(0o660)
        # the flow and the pinned wheels (prepared once, as on a cached agent) in the user's home
        flow_dir = home / "tiny_flow"
        shutil.copytree(FIXTURE_FLOW, flow_dir)
        wheels = wheel_cache(image_requirements(flow_dir))
        shutil.copytree(wheels, home / "cache" / "wheels" / wheels.name)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(home)], check=True)
        env = {
            "HOME": str(home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DOCKER_HOST": f"unix://{lent / 'docker.sock'}",
            "GENAIOPS_CACHE_DIR": str(home / "cache"),
            # this checkout's packages, run by the system Python (the venv's interpreter lives
            # under /root here; an agent's user has its own)
            "PYTHONPATH": f"{REPO_ROOT}:{sysconfig.get_paths()['purelib']}",
            # the checkout belongs to root here; on an agent it belongs to the agent's user
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": str(REPO_ROOT),
        }
        repository = f"genaiops-test/hosted-{uuid.uuid4().hex[:8]}"
        argv = [SYSTEM_PYTHON, "-c", BUILD_SCRIPT]
        argv += [str(flow_dir), repository, official_base, str(home / "ctx")]
        proc = subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        client = docker.DockerClient(base_url=local_env.docker_host, timeout=600)
        yield HostedBuild(client, official_base, result)
        client.images.remove(result["reference"], force=True, noprune=True)
    finally:
        (lent / "docker.sock").unlink(missing_ok=True)
        shutil.rmtree(lent, ignore_errors=True)
        os.chown(socket, before.st_uid, before.st_gid)
        socket.chmod(before.st_mode & 0o7777)
        subprocess.run(["userdel", "--remove", user], check=False, capture_output=True)


def test_a_non_root_user_builds_on_the_official_base_by_digest(hosted: HostedBuild) -> None:
    assert hosted.result["uid"] != 0
    labels = hosted.client.images.get(hosted.result["reference"]).labels
    assert labels["ai.genaiops.base-image"] == hosted.base
    assert "@sha256:" in labels["ai.genaiops.base-image"]
    # the engine pulled the base by digest (nothing was bootstrapped: no root)
    assert hosted.base in hosted.client.images.get(hosted.base).attrs["RepoDigests"]


def test_the_image_built_on_the_official_layout_serves(hosted: HostedBuild) -> None:
    port = free_port()
    container = hosted.client.containers.run(
        hosted.result["reference"],
        detach=True,
        network_mode="host",
        environment={"PORT": str(port), "HOST": "127.0.0.1", KEY_ENV: "hosted-test-key"},
        name=f"genaiops-test-{uuid.uuid4().hex[:8]}",
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            container.reload()
            assert container.status != "exited", container.logs(tail=30).decode(errors="replace")
            time.sleep(0.3)
        answer = requests.post(f"http://127.0.0.1:{port}/score", json={"text": "hello"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["answer"].endswith("hello")
        # python3 comes from the venv made with the base's /usr/local/bin/python3
        where = container.exec_run(["sh", "-c", "command -v python3; grep '^home' /venv/pyvenv.cfg"])
        assert where.output.decode().split() == ["/venv/bin/python3", "home", "=", "/usr/local/bin"]
        assert container.exec_run(["test", "-e", "/usr/bin/python3"]).exit_code != 0  # not in this base
    finally:
        container.remove(force=True)
