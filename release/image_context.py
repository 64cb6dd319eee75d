"""Where an environment builds and keeps images: its Docker engine, its registry (with the
Azure identity sign-in for ACR), repository names and the flow's connection renames.

Shared by the image commands and the release job; no CLI code here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from release import skopeo
from release.config import EnvironmentConfig, FlowSettings
from release.errors import UserError
from release.image import save_record
from release.promotion import REVISION_LABEL, revision_tag

if TYPE_CHECKING:
    from release.azure.acr import AcrAuth

DOCKER_TIMEOUT_S = 600
PUSH_TIMEOUT_S = 1800.0


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
    from release.azure.acr import AcrAuth
    from release.azure.clients import default_credential

    login_server = os.environ.get("GENAIOPS_ACR_LOGIN_SERVER") or names.registry_login_server(cfg)
    tenant = cfg.azure.tenant_id if cfg.azure else None
    return login_server, AcrAuth(login_server, default_credential(), tenant_id=tenant)


def registry_resource_id(cfg: EnvironmentConfig) -> str | None:
    """The ARM id of an Azure environment's registry (recorded at push: the source of ACR import)."""
    if cfg.kind != "azure" or cfg.azure is None:
        return None
    from release.azure import acr, names

    name = acr.registry_name(os.environ.get("GENAIOPS_ACR_LOGIN_SERVER") or names.registry_login_server(cfg))
    return acr.registry_resource_id(cfg.azure.subscription_id, cfg.resource_group_name, name)


def repository_name(flow: str) -> str:
    return f"genaiops/{flow.replace('_', '-')}"


def connection_overrides(cfg: EnvironmentConfig, settings: FlowSettings, flow_dir: Path) -> dict[str, str]:
    """The experiment's ``connection_overrides`` for this environment (e.g. local_openai -> aoai)."""
    path = flow_dir / settings.experiment
    if not path.is_file():
        return {}
    from release.experiment.spec import load_experiment

    return dict(load_experiment(path, cfg.environment).connection_overrides)


@dataclass(frozen=True)
class PushedImage:
    registry: str
    repository: str
    tag: str
    digest: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The pinned reference deployments use: ``registry/repo@sha256:...``."""
        return f"{self.registry}/{self.repository}@{self.digest}"


def push_image(
    client: docker.DockerClient,
    image: str,
    registry: str,
    repository: str,
    tag: str,
    auth: AcrAuth | None = None,
    timeout_s: float = PUSH_TIMEOUT_S,
) -> PushedImage:
    """Push ``image`` from the engine as ``registry/repository:tag`` (and ``rev-<sha>`` when it
    has a revision label); return the digest the registry serves (read back with skopeo)."""
    target = f"{registry}/{repository}"
    try:
        local = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise skopeo.RegistryError(
            f"image {image!r} is not in the engine; run 'genaiops build' first"
        ) from None
    revision = (local.labels or {}).get(REVISION_LABEL, "")
    tags = [tag] + ([revision_tag(revision)] if len(revision) >= 7 and revision != "unknown" else [])
    auth_config = auth.docker_auth() if auth else None
    started = time.monotonic()
    reported = ""
    for name in tags:
        local.tag(target, tag=name)
        try:
            for chunk in client.api.push(target, tag=name, stream=True, decode=True, auth_config=auth_config):
                if time.monotonic() - started > timeout_s:
                    raise skopeo.RegistryError(f"push of {target}:{name} took over {timeout_s:.0f} s")
                if "error" in chunk:
                    raise skopeo.RegistryError(
                        f"push of {target}:{name} failed: {str(chunk['error']).strip()}"
                    )
                digest = (chunk.get("aux") or {}).get("Digest")
                if digest and name == tag:
                    reported = str(digest)
        except docker.errors.APIError as exc:
            raise skopeo.RegistryError(f"push of {target}:{name} failed: {exc.explanation}") from None
    # the digest deployments pin is the one the registry serves
    served = skopeo.inspect(f"{target}:{tag}", [auth.credentials()] if auth else None)
    if reported and served.digest != reported:
        raise skopeo.RegistryError(
            f"registry {registry}: {repository}:{tag} is {served.digest}, the push reported {reported}"
        )
    return PushedImage(registry, repository, tag, served.digest, served.labels)


def push_flow_image(cfg: EnvironmentConfig, flow: str, image: str) -> PushedImage:
    """Push a built flow image to the environment's registry and record its digest
    (``<images>/<env>/<flow>.push.json``, read by deploy and by promote in the next environment:
    ``registry``, ``repository``, ``tag``, ``digest``, ``reference``, ``labels`` and, on Azure,
    ``registry_resource_id``)."""
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
            "registry_resource_id": registry_resource_id(cfg),
            "repository": pushed.repository,
            "tag": pushed.tag,
            "digest": pushed.digest,
            "reference": pushed.reference,
            "labels": pushed.labels,
            "source_image": image,
        },
    )
    return pushed
