"""Where an environment builds and keeps images: its Docker engine, its registry (with the
Azure identity sign-in for ACR), repository names and the flow's connection renames.

Shared by the image commands and the release job; no CLI code here.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import docker.errors

from release.config import EnvironmentConfig, FlowSettings
from release.errors import UserError
from release.image import save_record
from release.oci import AcrAuth, PushedImage, push_image

DOCKER_TIMEOUT_S = 600


def flow_settings(cfg: EnvironmentConfig, flow: str) -> FlowSettings:
    if flow not in cfg.flows:
        raise UserError(
            f"config/{cfg.environment}.yaml: flows.{flow}: no such flow; "
            f"flows in this environment: {sorted(cfg.flows)}"
        )
    return cfg.flows[flow]


def docker_client(cfg: EnvironmentConfig) -> docker.DockerClient:
    """The local engine: local.docker_host, $DOCKER_HOST, or the one `genaiops local up` started."""
    host = (cfg.local.docker_host if cfg.local else None) or os.environ.get("DOCKER_HOST")
    if not host and cfg.kind == "local":
        from release.local_env.environment import LocalEnvironment

        host = LocalEnvironment(cfg.local_settings()).docker_host()
    try:
        client = docker.DockerClient(base_url=host, timeout=DOCKER_TIMEOUT_S) if host else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise UserError(
            f"no Docker engine answers at {host or 'the default socket'} ({type(exc).__name__}); "
            "run 'genaiops local up' (or 'make local-up') or set DOCKER_HOST"
        ) from None
    return client


def registry_for(cfg: EnvironmentConfig) -> tuple[str, AcrAuth | None]:
    """The environment's registry host and, for Azure, its ACR sign-in (Azure identity)."""
    if cfg.kind == "local":
        return f"127.0.0.1:{cfg.local_settings().ports.registry}", None
    from release.azure import names
    from release.azure.clients import default_credential

    login_server = os.environ.get("GENAIOPS_ACR_LOGIN_SERVER") or names.registry_login_server(cfg)
    tenant = cfg.azure.tenant_id if cfg.azure else None
    return login_server, AcrAuth(login_server, default_credential(), tenant_id=tenant)


def repository_name(flow: str) -> str:
    return f"genaiops/{flow.replace('_', '-')}"


def connection_overrides(cfg: EnvironmentConfig, settings: FlowSettings, flow_dir: Path) -> dict[str, str]:
    """The experiment's ``connection_overrides`` for this environment (e.g. local_openai -> aoai)."""
    path = flow_dir / settings.experiment
    if not path.is_file():
        return {}
    from release.experiment.spec import load_experiment

    return dict(load_experiment(path, cfg.environment).connection_overrides)


def push_flow_image(cfg: EnvironmentConfig, flow: str, image: str) -> PushedImage:
    """Push a built flow image to the environment's registry and record its digest
    (``<images>/<env>/<flow>.push.json``, read by deploy and promote)."""
    tail = image.rsplit("/", 1)[-1]
    tag = image.rsplit(":", 1)[1] if ":" in tail else "latest"
    registry, auth = registry_for(cfg)
    pushed = push_image(docker_client(cfg), image, registry, repository_name(flow), tag, auth=auth)
    save_record(
        cfg.environment,
        flow,
        "push",
        {
            "flow": flow,
            "registry": pushed.registry,
            "repository": pushed.repository,
            "tag": pushed.tag,
            "digest": pushed.digest,
            "reference": pushed.reference,
            "source_image": image,
        },
    )
    return pushed
