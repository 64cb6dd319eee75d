"""Azure resource names as ``release/`` needs them, and Azure's naming rules for all of them.

The names themselves come from :mod:`infra.naming` (the one place that derives them from the
config, used by infra to create the resources), so release finds exactly what infra created.
This module adds the release-side helpers (a clear error for a ``kind: local`` environment,
Key Vault secret URIs, Azure ML deployment-name rules) and :func:`check`, which validates every
derived name against :data:`RULES` before synth: allowed characters, length, and uniqueness
among the flows of one environment. Sources:
https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules and, for
online endpoints, https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from infra import naming
from release.config import AppServiceTarget, EnvironmentConfig, KubernetesTarget, ManagedTarget
from release.errors import UserError

RULES_URL = "https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules"
ENDPOINT_RULES_URL = (
    "https://learn.microsoft.com/azure/machine-learning/how-to-manage-quotas"
    "#azure-machine-learning-online-endpoints-and-batch-endpoints"
)


@dataclass(frozen=True)
class Rule:
    """One Azure naming rule: ``pattern`` (full match), length bounds, scope of uniqueness."""

    what: str
    pattern: str
    min_len: int
    max_len: int
    unique: str  # "global", "region", "resource group", "workspace", "parent"
    allowed: str  # said to the user
    url: str = RULES_URL

    def problem(self, name: str) -> str | None:
        if not self.min_len <= len(name) <= self.max_len:
            return f"is {len(name)} characters; {self.what} names are {self.min_len}-{self.max_len}"
        if not re.fullmatch(self.pattern, name):
            return f"is not a valid {self.what} name ({self.allowed})"
        return None


_DNS = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_NET = r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9_])?"
RULES: dict[str, Rule] = {
    r.what: r
    for r in (
        Rule(
            "resource group",
            r"[-\w._()]*[-\w_()]",
            1,
            90,
            "subscription",
            "letters, digits, '_', '-', '.', '()'; not ending in '.'",
        ),
        Rule(
            "Azure ML workspace",
            r"[a-zA-Z0-9][a-zA-Z0-9_-]*",
            3,
            33,
            "resource group",
            "letters, digits, '-', '_'; starting with a letter or digit",
        ),
        Rule(
            "Key Vault",
            r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]*[a-zA-Z0-9]",
            3,
            24,
            "global",
            "letters, digits, single '-'; starting with a letter, ending with a letter or digit",
        ),
        Rule("container registry", r"[a-zA-Z0-9]+", 5, 50, "global", "letters and digits only"),
        Rule("storage account", r"[a-z0-9]+", 3, 24, "global", "lowercase letters and digits only"),
        Rule(
            "Log Analytics workspace",
            r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?",
            4,
            63,
            "resource group",
            "letters, digits, '-'; starting and ending with a letter or digit",
        ),
        Rule(
            "Application Insights",
            r"[^%&\\?/\x00-\x1f]*[^%&\\?/\x00-\x1f .]",
            1,
            260,
            "resource group",
            "no %&\\?/ or control characters; not ending in space or '.'",
        ),
        Rule(
            "online endpoint",
            r"[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]",
            3,
            32,
            "region",
            "letters, digits, '-'; starting with a letter, ending with a letter or digit",
            ENDPOINT_RULES_URL,
        ),
        Rule(
            "online deployment",
            r"[a-zA-Z][a-zA-Z0-9-]*",
            3,
            32,
            "parent",
            "letters, digits, '-'; starting with a letter",
            ENDPOINT_RULES_URL,
        ),
        Rule("web app", _DNS, 2, 60, "global", "letters, digits, '-'; not starting or ending with '-'"),
        Rule(
            "deployment slot", _DNS, 2, 59, "parent", "letters, digits, '-'; not starting or ending with '-'"
        ),
        Rule("App Service plan", r"[a-zA-Z0-9-]+", 1, 60, "resource group", "letters, digits, '-'"),
        Rule(
            "Azure ML compute",
            r"[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9]",
            2,
            16,
            "region",
            "letters, digits, '-'; starting with a letter",
        ),
        Rule(
            "virtual network",
            _NET,
            2,
            64,
            "resource group",
            "letters, digits, '_', '.', '-'; starting with a letter or digit, not ending in '.' or '-'",
        ),
        Rule(
            "network security group",
            _NET,
            1,
            80,
            "resource group",
            "letters, digits, '_', '.', '-'; starting with a letter or digit, not ending in '.' or '-'",
        ),
        Rule(
            "private endpoint",
            _NET,
            2,
            64,
            "resource group",
            "letters, digits, '_', '.', '-'; starting with a letter or digit, not ending in '.' or '-'",
        ),
        Rule(
            "VM scale set",
            r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9_])?",
            1,
            64,
            "resource group",
            "letters, digits, '_', '.', '-'; not ending in '.' or '-'",
        ),
        Rule(
            "managed identity",
            r"[a-zA-Z0-9][a-zA-Z0-9_-]*",
            3,
            128,
            "resource group",
            "letters, digits, '-', '_'; starting with a letter or digit",
        ),
    )
}


@dataclass(frozen=True)
class DerivedName:
    """A name this environment creates: ``rule`` key of :data:`RULES`, the field that sets it."""

    rule: str
    name: str
    field: str  # the config field to set (or shorten) to change it
    flow: str | None = None


def derived_names(cfg: EnvironmentConfig) -> list[DerivedName]:
    """Every Azure name the stack and the release derive from ``cfg`` (kind azure)."""
    _azure(cfg)
    env_fields = "azure.name_prefix or the environment name"
    out = [
        DerivedName("resource group", cfg.resource_group_name, "azure.resource_group.name"),
        DerivedName("Azure ML workspace", naming.ml_workspace(cfg), env_fields),
        DerivedName("Key Vault", naming.key_vault(cfg), env_fields),
        DerivedName("container registry", naming.container_registry(cfg), env_fields),
        DerivedName("storage account", naming.storage_account(cfg), env_fields),
        DerivedName("Log Analytics workspace", naming.log_analytics(cfg), env_fields),
        DerivedName("Application Insights", naming.app_insights(cfg), env_fields),
        DerivedName("Azure ML compute", cfg.workspace.batch_compute, "workspace.batch_compute"),
    ]
    if cfg.network_profile == "private":
        out += [
            DerivedName("virtual network", naming.virtual_network(cfg), env_fields),
            DerivedName("network security group", naming.network_security_group(cfg), env_fields),
            DerivedName("private endpoint", naming.private_endpoint(cfg, "workspace"), env_fields),
        ]
        if cfg.network and cfg.network.agent_pool:
            out += [
                DerivedName("VM scale set", naming.agent_scale_set(cfg), env_fields),
                DerivedName("managed identity", naming.agent_identity(cfg), env_fields),
            ]
    for flow, settings in cfg.flows.items():
        deployment = settings.deployment
        field = f"flows.{flow}.deployment"
        if isinstance(deployment, (ManagedTarget, KubernetesTarget)):
            out.append(
                DerivedName("online endpoint", cfg.endpoint_name(flow), f"{field}.endpoint_name", flow)
            )
        if isinstance(deployment, KubernetesTarget):
            out.append(
                DerivedName("Azure ML compute", deployment.compute_name, f"{field}.compute_name", flow)
            )
        if isinstance(deployment, AppServiceTarget):
            app = cfg.endpoint_name(flow)
            out += [
                DerivedName("web app", app, f"{field}.app_name", flow),
                DerivedName("deployment slot", deployment.slot, f"{field}.slot", flow),
                DerivedName("App Service plan", naming.service_plan(cfg, flow), f"{field}.app_name", flow),
            ]
    return out


def check(cfg: EnvironmentConfig, file: str) -> list[str]:
    """Problems with the derived names of ``cfg``, one line each (file, field, rule, URL).

    Checks each name against :data:`RULES` and refuses two flows whose endpoint, web app or plan
    names are equal (for example after the 32-character cut of a derived endpoint name).
    """
    problems = []
    for item in derived_names(cfg):
        rule = RULES[item.rule]
        problem = rule.problem(item.name)
        if problem:
            who = f" (flow {item.flow})" if item.flow else ""
            problems.append(
                f"{file}: {item.field}: the {rule.what} name {item.name!r}{who} {problem}; "
                f"set {item.field} to a valid name. Rule: {rule.url}"
            )
    by_name: dict[tuple[str, str], list[DerivedName]] = defaultdict(list)
    for item in derived_names(cfg):
        if item.flow is not None and item.rule in ("online endpoint", "web app", "App Service plan"):
            by_name[(item.rule, item.name.lower())].append(item)
    seen_compute = {n.name for n in derived_names(cfg) if n.rule == "Azure ML compute" and n.flow}
    for (what, name), items in sorted(by_name.items()):
        if len(items) > 1:
            flows = " and ".join(f"flows.{i.flow}" for i in items)
            problems.append(
                f"{file}: {flows} derive the same {what} name {name!r}; it must be unique in the "
                f"{RULES[what].unique} (two flows would share one {what}): set "
                + " or ".join(i.field for i in items)
                + f" to a unique name. Rule: {RULES[what].url}"
            )
    if cfg.workspace.batch_compute in seen_compute:
        problems.append(
            f"{file}: workspace.batch_compute: {cfg.workspace.batch_compute!r} is also a Kubernetes "
            "compute_name; compute names must be unique in the workspace: rename one"
        )
    return problems


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
