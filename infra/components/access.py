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
    """Grants for the deployer, the runtime identities, readers and promoters (the table with
    reasons: docs/infrastructure.md "Who gets which role"; each role's reason: infra/roles.py).

    - ``endpoints``: system-assigned identities of online endpoints. Azure ML assigns them AcrPull
      on the registry, Storage Blob Data Reader on the storage and AzureML Metrics Writer on the
      workspace itself when the endpoint is created; a second identical assignment fails with 409
      RoleAssignmentExists, so they get only what Azure ML does not grant
      (https://learn.microsoft.com/azure/machine-learning/concept-endpoints-online-auth#automatic-role-assignment-for-endpoint-identity).
    - ``web``: web app and slot identities: image pull, telemetry (Key Vault: KeyVaultAccess).
    - ``computes``: attached Kubernetes computes: the kubelet-side pull of flow images
      (https://learn.microsoft.com/azure/machine-learning/how-to-attach-kubernetes-to-workspace).
    - ``promoters``: identities that copy released images out of this registry (``genaiops
      promote --env <next>`` runs as the next environment's deployer).

    Key Vault access is :class:`infra.components.key_vault_access.KeyVaultAccess`.
    """

    ENDPOINT_ROLES = (
        ("Azure Machine Learning Workspace Connection Secrets Reader", "workspace_id"),
        ("Monitoring Metrics Publisher", "app_insights_id"),
    )
    WEB_ROLES = (
        ("AcrPull", "registry_id"),
        ("Monitoring Metrics Publisher", "app_insights_id"),
    )
    COMPUTE_ROLES = (("AcrPull", "registry_id"),)
    DEPLOYER_ROLES = (
        ("AzureML Data Scientist", "workspace_id"),
        ("AcrPush", "registry_id"),
        ("Storage Blob Data Contributor", "storage_id"),
    )
    READER_ROLES = (
        ("Reader", "workspace_id"),
        ("Storage Blob Data Reader", "storage_id"),
    )
    # the batch compute cluster running prompt flow parallel jobs (release/engine/azure_runs.py);
    # a compute cluster gets no automatic assignments
    BATCH_ROLES = (
        ("AcrPull", "registry_id"),
        ("Storage Blob Data Contributor", "storage_id"),
        ("Azure Machine Learning Workspace Connection Secrets Reader", "workspace_id"),
        ("AzureML Metrics Writer (preview)", "workspace_id"),
    )
    PROMOTER_ROLES = (("AcrPull", "registry_id"),)

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        subscription_id: str,
        scopes: Scopes,
        deployer: Principal,
        endpoints: Sequence[Principal] = (),
        web: Sequence[Principal] = (),
        computes: Sequence[Principal] = (),
        readers: Sequence[Principal] = (),
        web_apps: Sequence[tuple[str, str]] = (),
        batch: Sequence[Principal] = (),
        promoters: Sequence[Principal] = (),
    ) -> None:
        super().__init__(scope, id)
        self.assignments: list[RoleAssignment] = []

        def add(role_name: str, resource_id: str, principal: Principal, what: str) -> None:
            if not resource_id:
                raise ValueError(f"{id}: {role_name} for {principal.label} needs Scopes.{what}_id")
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

        def add_all(principals: Sequence[Principal], table: tuple[tuple[str, str], ...]) -> None:
            for principal in principals:
                for role_name, attr in table:
                    add(role_name, getattr(scopes, attr), principal, attr.removesuffix("_id"))

        add_all([deployer], self.DEPLOYER_ROLES)
        if scopes.log_analytics_id:
            add("Log Analytics Reader", scopes.log_analytics_id, deployer, "log_analytics")
        for label, web_app_id in web_apps:  # app scope covers its slots (child resources)
            add("Website Contributor", web_app_id, deployer, label)
        add_all(endpoints, self.ENDPOINT_ROLES)
        add_all(web, self.WEB_ROLES)
        add_all(computes, self.COMPUTE_ROLES)
        add_all(readers, self.READER_ROLES)
        add_all(batch, self.BATCH_ROLES)
        add_all(promoters, self.PROMOTER_ROLES)
