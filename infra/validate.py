"""Azure's constraints as config checks, run before anything is synthesized.

Light on purpose (no CDKTF import), so a bad config fails in well under a second. ``genaiops
config validate``, ``synth`` (and everything built on it: scan, plan) call :func:`check`. Each
problem names the file, the field, the rule and the documentation URL of the rule; all problems
are reported at once (:class:`release.config.ConfigError`, exit 2).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlparse

from release.azure import names
from release.config import (
    AppServiceTarget,
    ConfigError,
    EnvironmentConfig,
    KubernetesTarget,
    ManagedTarget,
    config_path,
)

_AKS_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+$",
    re.IGNORECASE,
)
_RESOURCE_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+/[^/]+$", re.I)

# the documentation behind each rule
URL_K8S_AUTH = "https://learn.microsoft.com/azure/machine-learning/concept-endpoints-online-auth#limitation"
URL_MANAGED_NETWORK = "https://learn.microsoft.com/azure/machine-learning/how-to-managed-network"
URL_MANAGED_NETWORK_LIMITS = f"{URL_MANAGED_NETWORK}#limitations"
URL_QUARANTINE = "https://github.com/Azure/acr/blob/main/docs/preview/quarantine/readme.md"
URL_APP_PULL = (
    "https://learn.microsoft.com/azure/app-service/configure-custom-container"
    "#use-an-image-from-a-network-protected-registry"
)
URL_KV_REFERENCES = "https://learn.microsoft.com/azure/app-service/app-service-key-vault-references"
URL_SECURE_ENDPOINT = "https://learn.microsoft.com/azure/machine-learning/concept-secure-online-endpoint"
URL_PRIVATE_AGENTS = (
    "https://learn.microsoft.com/azure/devops/pipelines/agents/scale-set-agents?view=azure-devops"
)
URL_HOSTED_AGENTS = "https://learn.microsoft.com/azure/devops/pipelines/agents/hosted?view=azure-devops"
# connection categories whose Azure resource takes a private-endpoint outbound rule
PRIVATE_LINK_CATEGORIES = {
    "AzureOpenAI": "account",
    "CognitiveService": "account",
    "CognitiveSearch": "searchService",
}


def check(cfg: EnvironmentConfig, file: str | None = None) -> None:
    """Every check the stack needs beyond the config model; raises before anything is written."""
    shown = file or f"config/{config_path(cfg.environment).name}"
    if cfg.kind != "azure" or cfg.azure is None or cfg.state is None or cfg.identities is None:
        raise ConfigError(f"{shown}: kind: {cfg.kind!r} has no cloud stack (only kind: azure has one)")
    problems = problems_of(cfg, shown)
    if problems:
        raise ConfigError("\n".join(problems))


def problems_of(cfg: EnvironmentConfig, shown: str) -> list[str]:
    """All problems of an Azure config (empty when it can be synthesized and deployed)."""
    problems = names.check(cfg, shown)
    problems += _targets(cfg, shown)
    problems += _network(cfg, shown)
    problems += _registry(cfg, shown)
    return problems


def _rule(shown: str, field: str, text: str, url: str) -> str:
    return f"{shown}: {field}: {text}. Rule: {url}"


def _targets(cfg: EnvironmentConfig, shown: str) -> list[str]:
    problems = []
    isolation = cfg.workspace.managed_network.isolation
    private = cfg.network_profile == "private"
    computes: dict[str, KubernetesTarget] = {}
    for flow, settings in cfg.flows.items():
        deployment = settings.deployment
        field = f"flows.{flow}.deployment"
        if isinstance(deployment, KubernetesTarget):
            if not _AKS_ID.match(deployment.aks_cluster_id):
                problems.append(
                    f"{shown}: {field}.aks_cluster_id: {deployment.aks_cluster_id!r} is not an AKS "
                    "resource id (/subscriptions/<id>/resourceGroups/<rg>/providers/"
                    "Microsoft.ContainerService/managedClusters/<name>)"
                )
            if deployment.auth_mode == "aad_token":
                problems.append(
                    _rule(
                        shown,
                        f"{field}.auth_mode",
                        "aad_token (Entra ID) is supported for managed online endpoints only; a "
                        "Kubernetes online endpoint takes aml_token or key: set auth_mode: aml_token",
                        URL_K8S_AUTH,
                    )
                )
            if not private and not (deployment.ssl_cname and deployment.ssl_secret):
                problems.append(
                    _rule(
                        shown,
                        f"{field}.ssl_cname",
                        "without ssl_cname and ssl_secret the Azure ML extension serves HTTP on an "
                        "internal load balancer, which the public profile's hosted agents cannot "
                        "reach: set both (HTTPS) or use network: private",
                        "https://learn.microsoft.com/azure/machine-learning/how-to-deploy-kubernetes-extension",
                    )
                )
            seen = computes.setdefault(deployment.compute_name, deployment)
            if (seen.aks_cluster_id, seen.namespace, seen.ssl_cname, seen.ssl_secret) != (
                deployment.aks_cluster_id,
                deployment.namespace,
                deployment.ssl_cname,
                deployment.ssl_secret,
            ):
                problems.append(
                    f"{shown}: {field}.compute_name: {deployment.compute_name!r} is attached once; "
                    "every flow on it must give the same aks_cluster_id, namespace, ssl_cname and "
                    "ssl_secret (or use another compute_name)"
                )
            if isolation != "disabled":
                problems.append(
                    _rule(
                        shown,
                        f"{field}.target",
                        f"Kubernetes compute is not supported in a workspace managed network "
                        f"(workspace.managed_network.isolation is {isolation}): set isolation: "
                        "disabled (the private profile's VNet then carries the private endpoints) "
                        "or deploy the flow with target: managed",
                        URL_MANAGED_NETWORK_LIMITS,
                    )
                )
        if isinstance(deployment, ManagedTarget) and isolation == "disabled":
            private_deps = [
                name
                for name, is_public in (
                    ("registry", cfg.registry.public_network_access),
                    ("workspace", cfg.workspace.public_network_access),
                )
                if not is_public
            ]
            if private_deps:
                problems.append(
                    _rule(
                        shown,
                        f"{field}.target",
                        "a managed online deployment reaches a private "
                        + " and ".join(private_deps)
                        + " only through the workspace managed network, and "
                        "workspace.managed_network.isolation is disabled: enable the managed "
                        "network or deploy the flow with target: kubernetes",
                        URL_SECURE_ENDPOINT,
                    )
                )
        if isinstance(deployment, AppServiceTarget) and not private:
            if not cfg.registry.public_network_access:
                problems.append(
                    _rule(
                        shown,
                        f"{field}.target",
                        "the registry is private (registry.public_network_access false) but the "
                        "public profile gives the App Service no VNet to pull through "
                        "(vnet_image_pull_enabled): use network: private, or keep the registry public",
                        URL_APP_PULL,
                    )
                )
            if not cfg.key_vault.public_network_access:
                problems.append(
                    _rule(
                        shown,
                        f"{field}.target",
                        "the Key Vault is private but the public profile gives the App Service no "
                        "VNet to resolve its Key Vault references through (they would be passed "
                        "through as literal text): use network: private, or keep the vault public",
                        URL_KV_REFERENCES,
                    )
                )
    return problems


def _network(cfg: EnvironmentConfig, shown: str) -> list[str]:
    problems = []
    network = cfg.network
    assert network is not None
    isolation = cfg.workspace.managed_network.isolation
    if network.profile == "private":
        if network.agent_pool is None:
            problems.append(
                _rule(
                    shown,
                    "network.agent_pool",
                    "the private profile has no agent pool: nothing outside the VNet can push "
                    "images, upload data or smoke-test the endpoints; add agent_pool: {name: ..., "
                    "ssh_public_key: ...} (a VM scale set in the VNet, registered as an Azure "
                    "DevOps scale-set agent pool)",
                    URL_PRIVATE_AGENTS,
                )
            )
        if network.allowed_ips:
            problems.append(
                f"{shown}: network.allowed_ips: IP allow lists belong to the public profile; the "
                "private profile is reached through its VNet only (remove allowed_ips)"
            )
        problems += _subnets(cfg, shown)
    else:
        for section, is_public in (
            ("workspace", cfg.workspace.public_network_access),
            ("registry", cfg.registry.public_network_access),
        ):
            if not is_public:
                problems.append(
                    _rule(
                        shown,
                        f"{section}.public_network_access",
                        f"false, but the public profile deploys from Microsoft-hosted agents, "
                        f"which then cannot reach the {section}: remove the override or use "
                        "network: private",
                        URL_HOSTED_AGENTS,
                    )
                )
        for index, value in enumerate(network.allowed_ips):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                problems.append(
                    f"{shown}: network.allowed_ips[{index}]: {value!r} is not an IP address or CIDR range"
                )
    if network.egress_fqdns and isolation != "allow_only_approved_outbound":
        problems.append(
            _rule(
                shown,
                "network.egress_fqdns",
                f"FQDN outbound rules need workspace.managed_network.isolation "
                f"allow_only_approved_outbound (it is {isolation})",
                URL_MANAGED_NETWORK,
            )
        )
    if isolation == "allow_only_approved_outbound":
        fqdns = {f.lower() for f in network.egress_fqdns}
        for index, connection in enumerate(cfg.connections):
            field = f"connections[{index}]"
            host = (urlparse(connection.target).hostname or connection.target).lower()
            needs_rule = connection.category in PRIVATE_LINK_CATEGORIES and connection.resource_id is None
            if needs_rule and host not in fqdns:
                problems.append(
                    _rule(
                        shown,
                        f"{field}.resource_id",
                        f"connection {connection.name!r} has no outbound rule: the managed "
                        "network allows only approved outbound traffic, so the flows cannot "
                        f"reach {host}; set resource_id to the {connection.category} resource "
                        "id (a private-endpoint rule is generated) or add the host to "
                        "network.egress_fqdns",
                        f"{URL_MANAGED_NETWORK}#scenario-use-prompt-flow-with-azure-openai-content-safety-and-azure-ai-search",
                    )
                )
            if connection.resource_id is not None and not _RESOURCE_ID.match(connection.resource_id):
                problems.append(
                    f"{shown}: {field}.resource_id: {connection.resource_id!r} is not an Azure "
                    "resource id (/subscriptions/<id>/resourceGroups/<rg>/providers/<ns>/<type>/<name>)"
                )
    return problems


def _subnets(cfg: EnvironmentConfig, shown: str) -> list[str]:
    network = cfg.network
    assert network is not None
    try:
        space = ipaddress.ip_network(network.address_space)
    except ValueError:
        return [f"{shown}: network.address_space: {network.address_space!r} is not a CIDR range"]
    problems: list[str] = []
    ranges: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for kind, value in network.subnets.model_dump().items():
        try:
            subnet = ipaddress.ip_network(value)
        except ValueError:
            problems.append(f"{shown}: network.subnets.{kind}: {value!r} is not a CIDR range")
            continue
        if not subnet.subnet_of(space):  # type: ignore[arg-type]
            problems.append(
                f"{shown}: network.subnets.{kind}: {value} is outside network.address_space {space}"
            )
        for other_kind, other in ranges:
            if subnet.overlaps(other):
                problems.append(
                    f"{shown}: network.subnets.{kind}: {value} overlaps subnets.{other_kind} {other}"
                )
        ranges.append((kind, subnet))
    return problems


def _registry(cfg: EnvironmentConfig, shown: str) -> list[str]:
    if cfg.registry.quarantine and not cfg.registry.quarantine_scanner:
        return [
            _rule(
                shown,
                "registry.quarantine",
                "quarantine blocks every pull until a scanner marks the image Passed, and no "
                "registry.quarantine_scanner is configured: every flow image would be unpullable; "
                "set quarantine: false or name the scanner that holds AcrQuarantineWriter",
                URL_QUARANTINE,
            )
        ]
    if cfg.registry.quarantine and cfg.registry.sku != "Premium":
        return [f"{shown}: registry.quarantine: quarantine needs registry.sku Premium"]
    return []
