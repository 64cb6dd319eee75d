"""Azure resource names derived from the config, in one place (infra and release both use them).

Globally unique names (storage, registry, vault) get a short stable suffix derived from the
subscription and resource group (which holds the environment), so two teams using the same
prefix do not collide. Every name here is checked against Azure's rules before synth by
:func:`release.azure.names.check` (characters, length, uniqueness among the flows).
"""

from __future__ import annotations

import hashlib
import re

from release.config import EnvironmentConfig


def _alnum(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _suffix(cfg: EnvironmentConfig) -> str:
    assert cfg.azure is not None
    seed = f"{cfg.azure.subscription_id}/{cfg.resource_group_name}".lower()
    return hashlib.sha256(seed.encode()).hexdigest()[:5]


def base(cfg: EnvironmentConfig) -> str:
    return f"{cfg.prefix}-{cfg.environment}"


def storage_account(cfg: EnvironmentConfig) -> str:  # 3-24 lowercase letters and digits
    return f"{_alnum(base(cfg))[:17]}st{_suffix(cfg)}"


def container_registry(cfg: EnvironmentConfig) -> str:  # 5-50 letters and digits
    return f"{_alnum(base(cfg))[:40]}acr{_suffix(cfg)}"


def key_vault(cfg: EnvironmentConfig) -> str:  # 3-24 letters, digits, dashes
    return f"{base(cfg)[:15].rstrip('-')}-kv-{_suffix(cfg)}"


def log_analytics(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-log"


def app_insights(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-appi"


def ml_workspace(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-mlw"


def service_plan(cfg: EnvironmentConfig, flow: str) -> str:
    return f"{cfg.endpoint_name(flow)}-plan"


# --------------------------------------------------------------------------- private profile


def virtual_network(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-vnet"


SUBNETS = ("private_endpoints", "app_service", "agents", "compute")


def subnet(kind: str) -> str:
    """``private_endpoints`` -> ``snet-private-endpoints`` (one subnet per kind in :data:`SUBNETS`)."""
    return f"snet-{kind.replace('_', '-')}"


def network_security_group(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-nsg"


def private_endpoint(cfg: EnvironmentConfig, what: str) -> str:
    return f"{base(cfg)}-pe-{what.replace('_', '-')}"


def agent_scale_set(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-agents-vmss"


def agent_identity(cfg: EnvironmentConfig) -> str:
    return f"{base(cfg)}-agents-id"


def tf_variable(env_var: str) -> str:
    """The sensitive Terraform variable holding a connection key given by ``secret: {env: VAR}``.

    ``plan`` passes ``TF_VAR_<name>`` from ``$VAR`` to terraform; the value never reaches disk.
    """
    return f"secret_{env_var.lower()}"


def key_vault_secret(env_var: str) -> str:
    """The Key Vault secret holding the key given by ``secret: {env: VAR}`` (``AOAI_API_KEY`` ->
    ``aoai-api-key``), which App Service Key Vault references name."""
    return env_var.lower().replace("_", "-")
