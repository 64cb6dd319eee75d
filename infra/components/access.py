"""Role assignments: each grants one role from ``infra/roles.py`` to one principal on one resource.

:func:`grant` is the only way the stacks create ``azurerm_role_assignment``; it refuses
privileged roles and subscription / management-group scopes, so a stack cannot hand out
Owner or Contributor on a subscription by mistake.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
from constructs import Construct

from infra import roles

_BROAD_SCOPE = re.compile(
    r"^(/subscriptions/[^/]+/?|/providers/Microsoft\.Management/managementGroups/.*|/)$", re.IGNORECASE
)


@dataclass(frozen=True)
class Principal:
    """Someone to grant roles to. ``object_id`` may be a token (a managed identity's id)."""

    label: str  # short, unique in the stack: becomes part of construct ids
    object_id: str
    principal_type: str | None = "ServicePrincipal"  # None: unknown until apply (Azure looks it up)
    managed_identity: bool = False  # created in this apply: skip the Entra ID existence check


@dataclass(frozen=True)
class Scopes:
    """The resources runtime identities and the deployer need access to."""

    workspace_id: str
    registry_id: str
    storage_id: str
    app_insights_id: str = ""  # needed when ``telemetry`` principals are given
    log_analytics_id: str = ""  # where canary checks read request telemetry (deployer, read only)


def grant(
    scope: Construct,
    id: str,
    *,
    subscription_id: str,
    role_name: str,
    resource_id: str,
    principal: Principal,
) -> RoleAssignment:
    if role_name in roles.PRIVILEGED:
        raise ValueError(f"{id}: {role_name!r} is privileged; grant a narrow role from infra/roles.py")
    if _BROAD_SCOPE.match(resource_id):
        raise ValueError(f"{id}: scope {resource_id!r} is a whole subscription; scope to one resource")
    return RoleAssignment(
        scope,
        id,
        scope=resource_id,
        role_definition_id=roles.definition_id(subscription_id, role_name),
        principal_id=principal.object_id,
        principal_type=principal.principal_type,
        skip_service_principal_aad_check=principal.managed_identity or None,
        description=f"genaiops: {role_name} for {principal.label}: {roles.role(role_name).why}",
    )


class Access(Construct):
    """Grants for the deployer, the runtime identities (endpoints, web apps) and readers.

    Key Vault access is :class:`infra.components.key_vault_access.KeyVaultAccess`.
    """

    RUNTIME_ROLES = (
        ("AcrPull", "registry_id"),
        ("Storage Blob Data Reader", "storage_id"),
        ("Azure ML Workspace Connection Secrets Reader", "workspace_id"),
        ("AzureML Metrics Writer", "workspace_id"),
    )
    DEPLOYER_ROLES = (
        ("AzureML Data Scientist", "workspace_id"),
        ("AcrPush", "registry_id"),
        ("Storage Blob Data Contributor", "storage_id"),
    )
    READER_ROLES = (
        ("Reader", "workspace_id"),
        ("Storage Blob Data Reader", "storage_id"),
    )
    # the batch compute cluster running prompt flow parallel jobs (release/engine/azure_runs.py)
    BATCH_ROLES = (
        ("AcrPull", "registry_id"),
        ("Storage Blob Data Contributor", "storage_id"),
        ("Azure ML Workspace Connection Secrets Reader", "workspace_id"),
        ("AzureML Metrics Writer", "workspace_id"),
    )
    # web apps and slots: telemetry to Application Insights with Entra ID (local auth is off)
    TELEMETRY_ROLES = (("Monitoring Metrics Publisher", "app_insights_id"),)

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        subscription_id: str,
        scopes: Scopes,
        deployer: Principal,
        runtime: Sequence[Principal] = (),
        readers: Sequence[Principal] = (),
        web_apps: Sequence[tuple[str, str]] = (),
        batch: Sequence[Principal] = (),
        telemetry: Sequence[Principal] = (),
    ) -> None:
        super().__init__(scope, id)
        self.assignments: list[RoleAssignment] = []

        def add(role_name: str, resource_id: str, principal: Principal, what: str) -> None:
            key = re.sub(r"[^a-z0-9]+", "_", f"{principal.label}_{role_name}_{what}".lower())
            self.assignments.append(
                grant(
                    self,
                    key,
                    subscription_id=subscription_id,
                    role_name=role_name,
                    resource_id=resource_id,
                    principal=principal,
                )
            )

        for role_name, attr in self.DEPLOYER_ROLES:
            add(role_name, getattr(scopes, attr), deployer, attr.removesuffix("_id"))
        if scopes.log_analytics_id:
            add("Log Analytics Reader", scopes.log_analytics_id, deployer, "log_analytics")
        for label, web_app_id in web_apps:
            add("Website Contributor", web_app_id, deployer, label)
        for principal in runtime:
            for role_name, attr in self.RUNTIME_ROLES:
                add(role_name, getattr(scopes, attr), principal, attr.removesuffix("_id"))
        for principal in readers:
            for role_name, attr in self.READER_ROLES:
                add(role_name, getattr(scopes, attr), principal, attr.removesuffix("_id"))
        for principal in batch:
            for role_name, attr in self.BATCH_ROLES:
                add(role_name, getattr(scopes, attr), principal, attr.removesuffix("_id"))
        if telemetry and not scopes.app_insights_id:
            raise ValueError(f"{id}: telemetry principals need Scopes.app_insights_id")
        for principal in telemetry:
            for role_name, attr in self.TELEMETRY_ROLES:
                add(role_name, getattr(scopes, attr), principal, attr.removesuffix("_id"))
