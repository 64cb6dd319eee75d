"""The shared ``local_env`` fixture hands out a working environment (what other tests rely on)."""

from __future__ import annotations

import docker

from release.local_env import net


def test_local_env_fixture_components_answer(local_env) -> None:  # type: ignore[no-untyped-def]
    client = docker.DockerClient(base_url=local_env.docker_host, timeout=30)
    try:
        assert client.ping() is True
    finally:
        client.close()
    registry_port = int(local_env.registry.rsplit(":", 1)[1])
    assert net.http_status("/v2/", registry_port) == 200
    assert local_env.router.healthy()
    assert local_env.router_url == local_env.router.url
    assert local_env.model_url.endswith("/v1") and local_env.model_api_key
    model_port = int(local_env.model_url.rsplit(":", 1)[1].split("/")[0])
    assert net.http_status("/health", model_port) == 200
    pages_port = int(local_env.pages_url.rsplit(":", 1)[1])
    assert net.http_status("/health", pages_port) == 200
    assert all(s.ok for s in local_env.env.status())
