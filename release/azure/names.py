"""Azure resource names as ``release/`` needs them.

The names themselves come from :mod:`infra.naming` (the one place that derives them from the
config, used by infra to create the resources), so release finds exactly what infra created.
This module adds the release-side helpers: a clear error for a ``kind: local`` environment,
Key Vault secret URIs, and Azure ML deployment-name rules.
"""

from __future__ import annotations

import re

from infra import naming
from release.config import EnvironmentConfig
from release.errors import UserError

# Azure ML online deployment names: a letter, then letters, digits or '-', 3..32 characters.
_ML_DEPLOYMENT_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{2,31}$")


def _azure(cfg: EnvironmentConfig) -> None:
    if cfg.kind != "azure" or cfg.azure is None:
        raise UserError(
            f"config/{cfg.environment}.yaml: kind: {cfg.kind!r} has no Azure resources; "
            "use an Azure environment such as --env dev"
        )


def base(cfg: EnvironmentConfig) -> str:
    _azure(cfg)
    return naming.base(cfg)


def workspace(cfg: EnvironmentConfig) -> str:
    _azure(cfg)
    return naming.ml_workspace(cfg)


def key_vault(cfg: EnvironmentConfig) -> str:
    _azure(cfg)
    return naming.key_vault(cfg)


def container_registry(cfg: EnvironmentConfig) -> str:
    _azure(cfg)
    return naming.container_registry(cfg)


def registry_login_server(cfg: EnvironmentConfig) -> str:
    return f"{container_registry(cfg)}.azurecr.io"


def key_vault_secret_uri(cfg: EnvironmentConfig, secret: str) -> str:
    """The versionless secret URI an App Service Key Vault reference points at."""
    return f"https://{key_vault(cfg)}.vault.azure.net/secrets/{secret}"


def app_insights_secret(cfg: EnvironmentConfig) -> str:
    """Key Vault secret (written by infra) holding the Application Insights connection string."""
    return "appinsights-connection-string"


def check_ml_deployment_name(name: str) -> str:
    if not _ML_DEPLOYMENT_RE.match(name):
        raise UserError(
            f"deployment name {name!r} is not valid for Azure ML: use 3-32 letters, digits or '-', "
            "starting with a letter (e.g. 'r20261124t0312-3fa2')"
        )
    return name
