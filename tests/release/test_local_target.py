"""The local target on the real local environment: Docker engine containers behind nginx."""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any

import docker
import pytest
import requests

from release.errors import UserError
from release.targets.base import DeploymentSpec, TrafficError
from release.targets.local import LocalTarget

pytestmark = [pytest.mark.docker]


stubs = sys.modules["release_test_stubs"]  # loaded by tests/release/conftest.py


def routed_version(target: LocalTarget, expected: set[str], tries: int = 50) -> str:
    """The version answering through the router, once it is one of ``expected`` (bounded)."""
    version = ""
    for _ in range(tries):
        response = requests.post(target.scoring_url(), json={}, timeout=10)
        version = (
            response.json().get("version", "") if response.status_code == 200 else str(response.status_code)
        )
        if version in expected:
            return version
        time.sleep(0.1)
    return version


def spec(target: LocalTarget, image: str, name: str, **env: str) -> DeploymentSpec:
    return DeploymentSpec(flow=target.flow, name=name, image=image, env={"STUB_VERSION": name, **env})


def test_deployment_gets_its_own_port_and_takes_routed_traffic(
    target: LocalTarget, images: dict[str, str]
) -> None:
    info = target.create_or_update(spec(target, images["good"], "d-one"), timeout_s=60)
    assert info.state == "Succeeded" and info.traffic == 0
    direct = requests.post(target.scoring_url("d-one"), json={"x": 1}, timeout=10)
    assert direct.status_code == 200 and direct.json()["version"] == "d-one"
    assert target.scoring_url("d-one").startswith("http://127.0.0.1:")

    target.set_traffic({"d-one": 100})
    assert routed_version(target, {"d-one"}) == "d-one"
    assert target.get_traffic() == {"d-one": 100}
    assert [(d.name, d.traffic) for d in target.list_deployments()] == [("d-one", 100)]
    assert target.health("d-one") == "healthy"

    with pytest.raises(UserError, match="still receives 100 %"):
        target.delete("d-one")


def test_invalid_traffic_maps_change_nothing(
    target: LocalTarget, images: dict[str, str], local_env: Any
) -> None:
    target.create_or_update(spec(target, images["good"], "d-a"), timeout_s=60)
    target.create_or_update(spec(target, images["good"], "d-b"), timeout_s=60)
    target.set_traffic({"d-a": 100, "d-b": 0})
    routed_version(target, {"d-a"})
    generation = local_env.router.generation()
    for bad, message in (
        ({"d-a": 60, "d-b": 30}, "sum to 100"),
        ({"d-a": 50, "ghost": 50}, "unknown deployment"),
        ({"d-a": 150, "d-b": -50}, "between 0 and 100"),
    ):
        with pytest.raises(TrafficError, match=message):
            target.set_traffic(bad)
    assert local_env.router.generation() == generation
    assert target.get_traffic() == {"d-a": 100, "d-b": 0}
    answers = {requests.post(target.scoring_url(), json={}, timeout=10).json()["version"] for _ in range(10)}
    assert answers == {"d-a"}


def test_weighted_split_and_secret_only_in_container_env(
    target: LocalTarget, images: dict[str, str], local_env: Any
) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    target.environ = {"MY_KEY_SOURCE": canary}
    secret_spec = DeploymentSpec(
        flow=target.flow,
        name="d-s",
        image=images["good"],
        env={"STUB_VERSION": "d-s"},
        secret_env={"CONN_API_KEY": "MY_KEY_SOURCE"},
    )
    target.create_or_update(secret_spec, timeout_s=60)
    target.create_or_update(spec(target, images["good"], "d-t"), timeout_s=60)
    target.set_traffic({"d-s": 20, "d-t": 80})
    routed_version(target, {"d-s", "d-t"})
    versions = [
        requests.post(target.scoring_url(), json={}, timeout=10).json()["version"] for _ in range(100)
    ]
    # nginx smooth weighted round robin, per worker (2 workers): 20 of 100, give or take 2
    assert 18 <= versions.count("d-s") <= 22 and versions.count("d-s") + versions.count("d-t") == 100

    client = docker.DockerClient(base_url=local_env.docker_host)
    container = client.containers.get(target.container_name("d-s"))
    assert f"CONN_API_KEY={canary}" in container.attrs["Config"]["Env"]
    assert canary not in str(container.labels)
    assert canary not in str(client.images.get(images["good"]).history())
    assert canary not in str([d.labels for d in target.list_deployments()])

    target.environ = {}
    missing = DeploymentSpec(
        flow=target.flow, name="d-u", image=images["good"], secret_env={"K": "UNSET_VAR"}
    )
    with pytest.raises(UserError, match="UNSET_VAR"):
        target.create_or_update(missing, timeout_s=30)
    assert "d-u" not in {d.name for d in target.list_deployments()}
