"""Checks a stack needs beyond the config model, run before anything is synthesized.

Light on purpose (no CDKTF import), so a bad config fails in well under a second.
"""

from __future__ import annotations

import re

from release.config import ConfigError, EnvironmentConfig, KubernetesTarget, ManagedTarget, config_path

_AKS_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+$",
    re.IGNORECASE,
)
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")
_COMPUTE_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,14}[a-zA-Z0-9]$")  # Azure ML compute: 2-16


def check(cfg: EnvironmentConfig, file: str | None = None) -> None:
    """Checks the stack needs beyond the config model; raises before anything is written."""
    shown = file or str(config_path(cfg.environment).name)
    if cfg.kind != "azure" or cfg.azure is None or cfg.state is None or cfg.identities is None:
        raise ConfigError(f"{shown}: kind: {cfg.kind!r} has no cloud stack (only kind: azure has one)")
    problems = []
    if not _COMPUTE_NAME.match(cfg.workspace.batch_compute):
        problems.append(
            f"{shown}: workspace.batch_compute: {cfg.workspace.batch_compute!r} is not an Azure ML "
            "compute name; use 2-16 letters, digits or dashes, starting with a letter (e.g. cpu-cluster)"
        )
    for flow, settings in cfg.flows.items():
        deployment = settings.deployment
        field = f"flows.{flow}.deployment"
        if isinstance(deployment, KubernetesTarget) and not _AKS_ID.match(deployment.aks_cluster_id):
            problems.append(
                f"{shown}: {field}.aks_cluster_id: {deployment.aks_cluster_id!r} is not an AKS "
                "resource id (/subscriptions/<id>/resourceGroups/<rg>/providers/"
                "Microsoft.ContainerService/managedClusters/<name>)"
            )
        if isinstance(deployment, (ManagedTarget, KubernetesTarget)):
            name = cfg.endpoint_name(flow)
            if not _ENDPOINT_NAME.match(name):
                problems.append(
                    f"{shown}: {field}.endpoint_name: {name!r} must be 3-32 letters, digits or "
                    "dashes, starting with a letter; set endpoint_name to a shorter name"
                )
    if problems:
        raise ConfigError("\n".join(problems))
