"""Flow images on the real local Docker engine and registry (the ``local_env`` fixture).

One image of a tiny flow is built per session (with a canary secret in the environment during
the build and the run), run as a real container (``--network host``, a free port), rebuilt
from scratch (no layer cache, a fresh context: the same image id), rebuilt after a prompt-only
change, pushed, read back by digest over the registry's HTTP API and copied by digest (skopeo).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
from release.config import Connection
from release.git import git_sha
from release.image import BuiltImage, ImageSpec, build_image, render_dockerfile
from release.image_context import push_image
from release.local_env.net import free_port
from release.promotion import Provenance, read_provenance, record_provenance
from release.registry.hashing import content_hash

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIXTURE_FLOW = Path(__file__).parent / "fixtures" / "tiny_flow"
CANARY = "canary-" + uuid.uuid4().hex  # never written anywhere by design
KEY_ENV = "TINY_CONN_API_KEY"  # the flow names `local_openai`; this environment maps it to `tiny_conn`
CONNECTION = Connection.model_validate(
    {
        "name": "tiny_conn",
        "category": "OpenAI",
        "target": "http://127.0.0.1:9/v1",
        "secret": {"env": "LOCAL_MODEL_API_KEY"},
    }
)
WAIT_S = 90


@dataclass(frozen=True)
class Built:
    client: docker.DockerClient
    docker_host: str
    registry: str
    first: BuiltImage
    rebuilt: BuiltImage  # the first spec again: no layer cache, a fresh context
    second: BuiltImage  # after a prompt-only change
    flow_dir: Path
    context_dirs: tuple[Path, ...]


def _spec(flow_dir: Path, repository: str, tag: str) -> ImageSpec:
    return ImageSpec(
        flow="tiny",
        flow_dir=flow_dir,
        repository=repository,
        tag=tag,
        base_image="genaiops/base-python:bookworm",
        connections=(CONNECTION,),
        version="3",
        variant="answer=variant_1",
        variant_config={"variants": {"answer": "variant_1"}, "params": {}},
        connection_overrides={"local_openai": "tiny_conn"},
    )


@pytest.fixture(scope="module")
def built(local_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    client = docker.DockerClient(base_url=local_env.docker_host, timeout=600)
    work = tmp_path_factory.mktemp("image")
    flow_dir = work / "tiny_flow"
    shutil.copytree(FIXTURE_FLOW, flow_dir)
    repository = f"genaiops-test/tiny-{uuid.uuid4().hex[:8]}"
    saved = {k: os.environ.get(k) for k in (KEY_ENV, "LOCAL_MODEL_API_KEY")}
    os.environ[KEY_ENV] = CANARY
    os.environ["LOCAL_MODEL_API_KEY"] = CANARY
    try:
        first = build_image(client, _spec(flow_dir, repository, "v1"), work / "ctx1")
        # from scratch: every layer rebuilt (nocache), another context folder, files touched now
        for file in flow_dir.rglob("*"):
            os.utime(file)
        rebuilt = build_image(client, _spec(flow_dir, repository, "v1-again"), work / "ctx3", nocache=True)
        (flow_dir / "prompt.txt").write_text("Changed prompt, {greeting}: {text}\n")
        second = build_image(client, _spec(flow_dir, repository, "v2"), work / "ctx2")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield Built(
        client,
        local_env.docker_host,
        local_env.registry,
        first,
        rebuilt,
        second,
        flow_dir,
        (work / "ctx1", work / "ctx2", work / "ctx3"),
    )
    for image in (first, rebuilt, second):
        # noprune keeps the parent layers as build cache for the next session
        client.images.remove(image.reference, force=True, noprune=True)


@pytest.fixture()
def run_container(built: Built) -> Iterator[Any]:
    started: list[Any] = []

    def run(image: str, env: dict[str, str]) -> Any:
        container = built.client.containers.run(
            image,
            detach=True,
            network_mode="host",
            environment=env,
            name=f"genaiops-test-{uuid.uuid4().hex[:8]}",
        )
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)


def _wait_healthy(port: int, container: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.3)
    raise AssertionError(f"container not healthy: {container.logs(tail=30).decode(errors='replace')}")


def test_image_serves_score_and_health_as_non_root(built: Built, run_container: Any) -> None:
    port = free_port()
    container = run_container(
        built.first.reference, {"PORT": str(port), "HOST": "127.0.0.1", KEY_ENV: CANARY}
    )
    _wait_healthy(port, container)

    ok = requests.post(f"http://127.0.0.1:{port}/score", json={"text": "hello"}, timeout=30)
    assert ok.status_code == 200
    # the chosen variant (answer=variant_1) is applied; the key came from the environment at
    # start-up (shown only as a fingerprint)
    fingerprint = hashlib.sha256(CANARY.encode()).hexdigest()[:12]
    assert ok.json() == {"answer": "Hi: hello", "key_fingerprint": fingerprint}
    missing = requests.post(f"http://127.0.0.1:{port}/score", json={"wrong": 1}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "InvalidInput"
    failed = requests.post(f"http://127.0.0.1:{port}/score", json={"text": "fail"}, timeout=30)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "FlowRunFailed"
    not_json = requests.post(f"http://127.0.0.1:{port}/score", data=b"{not json", timeout=30)
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "InvalidJson"

    assert built.client.images.get(built.first.reference).attrs["Config"]["User"] == "10001:10001"
    assert container.exec_run("id -u").output.decode().strip() == "10001"
    # several worker processes serve the flow, each loaded it
    deadline = time.monotonic() + WAIT_S
    loaded: set[str] = set()
    while len(loaded) < 2 and time.monotonic() < deadline:
        logs = container.logs().decode(errors="replace")
        loaded = {
            line.split("worker ")[1].split(":")[0] for line in logs.splitlines() if "flow loaded" in line
        }
        time.sleep(0.3)
    assert len(loaded) == 2, logs
    assert CANARY not in logs
    # docker stop (SIGTERM): the workers drain and the server exits cleanly, not by SIGKILL
    container.stop(timeout=20)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs(tail=20)


def test_container_without_the_connection_key_exits_with_a_clear_error(
    built: Built, run_container: Any
) -> None:
    container = run_container(built.first.reference, {"PORT": str(free_port()), "HOST": "127.0.0.1"})
    result = container.wait(timeout=WAIT_S)
    assert result["StatusCode"] != 0
    assert KEY_ENV in container.logs().decode(errors="replace")


def test_labels_record_git_sha_flow_hash_version_variant(built: Built) -> None:
    labels = built.client.images.get(built.first.reference).labels
    assert labels["org.opencontainers.image.revision"] == (git_sha() or "unknown")
    assert labels["ai.genaiops.flow"] == "tiny"
    assert labels["ai.genaiops.flow-hash"] == content_hash(FIXTURE_FLOW)
    assert labels["ai.genaiops.version"] == "3"
    assert labels["ai.genaiops.variant"] == "answer=variant_1"
    assert labels["ai.genaiops.connection-env"] == KEY_ENV
    # the second build reflects the changed flow content
    second = built.client.images.get(built.second.reference).labels
    assert second["ai.genaiops.flow-hash"] == content_hash(built.flow_dir) != labels["ai.genaiops.flow-hash"]


def test_prompt_only_change_rebuilds_only_the_flow_layer(built: Built) -> None:
    first, second = built.first.layers, built.second.layers
    assert len(first) == len(second) >= 3
    assert first[:-1] == second[:-1]
    assert first[-1] != second[-1]
    # the changed layer is the flow copy, the last instruction that touches files
    history = [h for h in built.client.images.get(built.second.reference).history() if h.get("Size", 0) > 0]
    assert "COPY dir:" in history[0]["CreatedBy"]
    assert "Using cache" in built.second.log


def test_canary_secret_is_in_no_layer_history_log_or_context(built: Built) -> None:
    needle = CANARY.encode()
    for ref in (built.first.reference, built.second.reference):
        image = built.client.images.get(ref)
        tail = b""
        size = 0
        for chunk in image.save(chunk_size=1 << 20):  # every layer tar, config and manifest
            window = tail + chunk
            assert needle not in window, f"canary found in the saved image {ref}"
            tail = window[-len(needle) :]
            size += len(chunk)
        assert size > 10_000_000  # really the image, with its layers
        assert CANARY not in json.dumps(image.history())
        assert CANARY not in json.dumps(image.attrs)
    for log in (built.first.log, built.second.log):
        assert CANARY not in log and "Successfully built" in log
    for folder in built.context_dirs:
        for file in folder.rglob("*"):
            if file.is_file() and file.suffix != ".whl":
                assert needle not in file.read_bytes(), file
    settings = json.loads((built.context_dirs[0] / "layer-app" / "app" / "settings.json").read_text())
    assert settings == {KEY_ENV: ""}


def test_rebuild_from_scratch_gives_the_same_image_and_a_prompt_edit_another(built: Built) -> None:
    # no layer was reused (nocache) and the context was written anew, yet the image is the same
    assert "Using cache" not in built.rebuilt.log
    assert built.rebuilt.layers == built.first.layers
    assert built.rebuilt.image_id == built.first.image_id
    # the image's times are the commit time (SOURCE_DATE_EPOCH), not the build time
    from release.image import build_epoch
    from release.reproducible import rfc3339

    attrs = built.client.images.get(built.rebuilt.image_id).attrs
    assert attrs["Created"].startswith(rfc3339(build_epoch())[:-1])
    assert not any("date" in key.lower() or "created" in key.lower() for key in built.first.labels)
    # a prompt edit is a different image
    assert built.second.image_id != built.first.image_id


def test_push_read_by_digest_and_copy_the_same_digest(built: Built, tmp_path: Path) -> None:
    repo = f"dev/tiny-{uuid.uuid4().hex[:8]}"
    pushed = push_image(built.client, built.first.reference, built.registry, repo, "v1")
    again = push_image(built.client, built.rebuilt.reference, built.registry, repo, "v1-again")
    assert pushed.digest.startswith("sha256:") and again.digest == pushed.digest  # reproducible
    assert pushed.reference == f"{built.registry}/{repo}@{pushed.digest}"
    assert pushed.labels["ai.genaiops.flow"] == "tiny"
    revision = pushed.labels["org.opencontainers.image.revision"]
    if revision != "unknown":  # every push also tags the commit, so promotion can find it
        assert skopeo.inspect(f"{built.registry}/{repo}:rev-{revision[:12]}").digest == pushed.digest

    manifest = requests.get(
        f"http://{built.registry}/v2/{repo}/manifests/{pushed.digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=30,
    )
    assert manifest.status_code == 200
    assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == pushed.digest
    layers = manifest.json()["layers"]
    assert len(layers) == len(built.first.layers)

    prod_repo = repo.replace("dev/", "prod/")
    skopeo.copy(pushed.reference, f"{built.registry}/{prod_repo}:v1")
    copied = skopeo.inspect(f"{built.registry}/{prod_repo}:v1")
    assert copied.digest == pushed.digest and copied.labels == pushed.labels
    same = requests.get(
        f"http://{built.registry}/v2/{prod_repo}/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=30,
    )
    assert same.content == manifest.content
    log = record_provenance(
        tmp_path / "provenance.jsonl",
        Provenance(
            flow="tiny",
            digest=copied.digest,
            source=pushed.reference,
            destination=f"{built.registry}/{prod_repo}@{copied.digest}",
            source_env="dev",
            destination_env="prod",
            method="skopeo",
        ),
    )
    assert read_provenance(log)[0]["source"] == pushed.reference


def test_dockerfile_orders_layers_and_takes_the_base_image() -> None:
    text = render_dockerfile("example.org/python:3.11", {"ai.genaiops.flow": "x"})
    assert "ARG BASE_IMAGE=example.org/python:3.11" in text
    order = [
        text.index(s)
        for s in ("requirements.txt", "COPY --from=deps", "COPY layer-app/", "COPY layer-flow/", "USER ")
    ]
    assert order == sorted(order)
    # the final stage has no RUN step: every layer is a COPY of normalized files (reproducible)
    assert "RUN " not in text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/usr/bin/python3" not in instructions and "/usr/local/bin/python3" not in instructions
    assert text.rstrip().endswith('"ai.genaiops.flow"="x"')
    assert "ARG " not in text.replace("ARG BASE_IMAGE", "")  # no build arg could carry a secret


def test_cli_errors_name_the_flow_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], image_cli: Any
) -> None:
    _cli = image_cli
    monkeypatch.setenv("GENAIOPS_IMAGES_DIR", str(tmp_path))
    assert _cli("build", "--flow", "no_such_flow", "--env", "local") == 2
    assert "flows.no_such_flow: no such flow" in capsys.readouterr().out
    assert _cli("push", "--flow", "web_classification", "--env", "local") == 2
    assert "run 'genaiops build --flow web_classification --env local' first" in capsys.readouterr().out
    assert _cli("promote", "--flow", "web_classification", "--env", "local") == 2
    assert "no environment before it" in capsys.readouterr().out


def test_cli_push_records_the_registry_digest(
    built: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    image_cli: Any,
) -> None:
    _cli = image_cli
    from release.image import load_record

    monkeypatch.setenv("GENAIOPS_IMAGES_DIR", str(tmp_path))
    monkeypatch.setenv("GENAIOPS_REGISTRY_PORT", built.registry.rsplit(":", 1)[1])
    monkeypatch.setenv("DOCKER_HOST", built.docker_host)
    assert (
        _cli("push", "--flow", "web_classification", "--env", "local", "--image", built.first.reference) == 0
    )
    record = load_record("local", "web_classification", "push")
    assert record is not None and record["registry"] == built.registry
    assert record["reference"] == f"{built.registry}/genaiops/web-classification@{record['digest']}"
    assert skopeo.inspect(f"{built.registry}/genaiops/web-classification:v1").digest == record["digest"]
    assert record["labels"]["ai.genaiops.flow"] == "tiny" and record["registry_resource_id"] is None
    assert record["digest"] in capsys.readouterr().out
    built.client.images.remove(f"{built.registry}/genaiops/web-classification:v1", noprune=True)
