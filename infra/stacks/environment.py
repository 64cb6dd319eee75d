"""One stack per Azure environment: composes the components and wires grants between them.

Both network profiles are one stack, applied in one go: everything Terraform does is a
control-plane (ARM) call, so the first ``apply`` also works from a Microsoft-hosted agent for the
private profile (storage: ``features.storage.data_plane_available = false``; Key Vault secrets
are written through ARM). Order of first deployment: docs/infrastructure.md.
"""

from __future__ import annotations

import re
from typing import Any

import cdktf
from cdktf_cdktf_provider_azurerm.provider import (
    AzurermProvider,
    AzurermProviderFeatures,
    AzurermProviderFeaturesKeyVault,
    AzurermProviderFeaturesResourceGroup,
    AzurermProviderFeaturesStorage,
)
from constructs import Construct

from infra import naming
from infra.azapi import AzapiProvider
from infra.components.access import Access, Principal, Scopes
from infra.components.agent_pool import AgentPool
from infra.components.app_service import WebApp, key_vault_reference
from infra.components.batch_compute import BatchCompute
from infra.components.connections import Connections
from infra.components.endpoints import OnlineEndpoint
from infra.components.key_vault_access import KeyVaultAccess
from infra.components.kubernetes import KubernetesCompute
from infra.components.network import STORAGE_SUBRESOURCES, Network
from infra.components.outbound_rules import OutboundRules
from infra.components.vault_secrets import VaultSecrets
from infra.components.workspace import Workspace
from infra.time_sleep import TimeProvider, TimeSleep
from infra.validate import check
from release.azure.names import app_insights_secret
from release.config import (
    AppServiceTarget,
    EnvironmentConfig,
    EnvSecret,
    KubernetesTarget,
    ManagedTarget,
)

# RBAC changes take effect within minutes; data-plane use right after a grant fails with 403
# (https://learn.microsoft.com/azure/role-based-access-control/troubleshooting). Everything that
# uses a grant of this stack (Key Vault secrets App Service resolves, and the release right after
# `apply`) waits this long after the last grant.
RBAC_PROPAGATION = "120s"


def provider_features() -> AzurermProviderFeatures:
    """The azurerm ``features`` block, typed (a plain dict loses its snake_case keys in jsii).

    - storage ``data_plane_available = false``: azurerm must not call the blob/queue data plane
      of a storage account that denies public access (it would fail with 403); Azure ML needs
      no data-plane setting from us (H1, https://registry.terraform.io/providers/hashicorp/azurerm/latest/docs/guides/features-block);
    - key_vault: never purge on destroy (purge protection is on), recover soft-deleted vaults;
    - resource_group: refuse to delete a group that still holds resources.
    """
    return AzurermProviderFeatures(
        key_vault=[
            AzurermProviderFeaturesKeyVault(
                purge_soft_delete_on_destroy=False, recover_soft_deleted_key_vaults=True
            )
        ],
        resource_group=[AzurermProviderFeaturesResourceGroup(prevent_deletion_if_contains_resources=True)],
        storage=[AzurermProviderFeaturesStorage(data_plane_available=False)],
    )


class EnvironmentStack(cdktf.TerraformStack):
    """The stack ``<env>``. Attributes: ``workspace``, ``network`` (private profile),
    ``outbound_rules``, ``agent_pool``, ``connections``, ``batch``, ``endpoints``, ``web_apps``,
    ``computes``, ``access``, ``key_vault_access``, ``rbac_wait``, ``secrets``, ``config``."""

    def __init__(self, scope: Construct, cfg: EnvironmentConfig) -> None:
        check(cfg)
        assert cfg.azure is not None and cfg.state is not None and cfg.identities is not None
        assert cfg.network is not None
        super().__init__(scope, cfg.environment)
        self.config = cfg
        self.tags = dict(cfg.azure.tags)
        self.azapi, self.time = self._providers_and_backend()
        self.workspace = Workspace(self, "workspace", cfg)
        ws = self.workspace
        self.network: Network | None = None
        self.agent_pool: AgentPool | None = None
        if cfg.network.profile == "private":
            self._private_network()
        self.outbound_rules: OutboundRules | None = None
        if cfg.workspace.managed_network.isolation != "disabled":
            self.outbound_rules = OutboundRules(
                self, "outbound_rules", cfg=cfg, workspace_id=ws.workspace_id, storage_id=ws.storage.id
            )
        self.connections = Connections(
            self,
            "connections",
            provider=self.azapi,
            workspace_id=ws.workspace_id,
            key_vault_id=ws.key_vault.id,
            connections=cfg.connections,
        )
        managed_network = cfg.workspace.managed_network.isolation != "disabled"
        self.batch = BatchCompute(
            self,
            "batch_compute",
            name=cfg.workspace.batch_compute,
            workspace_id=ws.workspace_id,
            location=ws.location,
            vm_size=cfg.workspace.batch_vm_size,
            max_nodes=cfg.workspace.batch_max_nodes,
            managed_network=managed_network,
            subnet_id=self.network.subnet_ids["compute"] if self.network and not managed_network else None,
            tags=self.tags,
        )
        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.web_apps: dict[str, WebApp] = {}
        self.computes: dict[str, KubernetesCompute] = {}
        self.endpoint_identities: list[Principal] = []
        self.web_identities: list[Principal] = []
        self.flows_output: dict[str, Any] = {}
        for flow in cfg.flows:
            self._deployment(flow)
        self._grants()
        self._secrets()
        self._outputs()

    def _providers_and_backend(self) -> tuple[AzapiProvider, TimeProvider]:
        cfg = self.config
        assert cfg.azure is not None and cfg.state is not None
        AzurermProvider(
            self,
            "azurerm",
            features=[provider_features()],
            subscription_id=cfg.azure.subscription_id,
            tenant_id=cfg.azure.tenant_id,
            storage_use_azuread=True,
        )
        cdktf.AzurermBackend(
            self,
            resource_group_name=cfg.state.resource_group,
            storage_account_name=cfg.state.storage_account,
            container_name=cfg.state.container,
            key=cfg.state.key,
            use_azuread_auth=cfg.state.use_azuread_auth,
            subscription_id=cfg.azure.subscription_id,
            tenant_id=cfg.azure.tenant_id,
        )
        return AzapiProvider(self, "azapi"), TimeProvider(self, "time")

    def _private_network(self) -> None:
        """VNet, DNS zones, private endpoints for vault, registry, storage and workspace, and the
        agent pool (private profile)."""
        cfg, ws = self.config, self.workspace
        assert cfg.network is not None
        self.network = network = Network(
            self,
            "network",
            cfg=cfg,
            resource_group_name=ws.resource_group_name,
            location=ws.location,
            depends_on=ws.depends,
            tags=self.tags,
        )
        network.private_endpoint("vault", ws.key_vault.id, "vault")
        network.private_endpoint("registry", ws.registry.id, "registry")
        for sub in STORAGE_SUBRESOURCES:
            network.private_endpoint(f"storage-{sub}", ws.storage.id, sub)
        network.private_endpoint("workspace", ws.workspace_id, "amlworkspace")
        if cfg.network.agent_pool is not None:
            self.agent_pool = AgentPool(
                self,
                "agents",
                cfg=cfg,
                settings=cfg.network.agent_pool,
                subnet_id=network.subnet_ids["agents"],
                resource_group_name=ws.resource_group_name,
                location=ws.location,
                tags=self.tags,
            )

    def _deployment(self, flow: str) -> None:
        cfg, ws = self.config, self.workspace
        deployment = cfg.flows[flow].deployment
        label = flow.replace("-", "_")
        name = cfg.endpoint_name(flow)
        if isinstance(deployment, (ManagedTarget, KubernetesTarget)):
            compute_id = None
            if isinstance(deployment, KubernetesTarget):
                compute_id = self._kubernetes_compute(deployment).compute_id
            endpoint = OnlineEndpoint(
                self,
                f"endpoint_{label}",
                provider=self.azapi,
                name=name,
                workspace_id=ws.workspace_id,
                location=ws.location,
                auth_mode=deployment.auth_mode,
                require_aad=cfg.workspace.require_aad_auth and isinstance(deployment, ManagedTarget),
                public_network_access=(
                    deployment.public_network_access if isinstance(deployment, ManagedTarget) else None
                ),
                compute_id=compute_id,
                description=f"prompt flow {flow} ({cfg.environment})",
                tags=self.tags,
            )
            self.endpoints[flow] = endpoint
            self.endpoint_identities.append(
                Principal(f"ep_{label}", endpoint.principal_id, managed_identity=True)
            )
            self.flows_output[flow] = {
                "target": deployment.target,
                "endpoint_name": name,
                "endpoint_id": endpoint.resource.resource_id,
                "principal_id": endpoint.principal_id,
            }
        elif isinstance(deployment, AppServiceTarget):
            app = WebApp(
                self,
                f"webapp_{label}",
                target=deployment,
                app_name=name,
                plan_name=naming.service_plan(cfg, flow),
                resource_group_name=ws.resource_group_name,
                location=ws.location,
                registry_login_server=ws.registry.login_server,
                app_insights_reference=key_vault_reference(ws.key_vault.vault_uri, app_insights_secret(cfg)),
                subnet_id=self.network.subnet_ids["app_service"] if self.network else None,
                tags=self.tags,
            )
            if self.network is not None:  # reached from the VNet (agents: warm-up, smoke tests)
                self.network.private_endpoint(f"app-{label}", app.app_id, "sites")
                self.network.private_endpoint(f"slot-{label}", app.app_id, f"sites-{deployment.slot}")
            self.web_apps[flow] = app
            self.web_identities += [
                Principal(f"app_{label}", app.principal_id, managed_identity=True),
                Principal(f"slot_{label}", app.slot_principal_id, managed_identity=True),
            ]
            self.flows_output[flow] = {
                "target": deployment.target,
                "web_app_name": app.app_name,
                "slot_name": app.slot_name,
                "principal_id": app.principal_id,
                "slot_principal_id": app.slot_principal_id,
            }

    def _kubernetes_compute(self, target: KubernetesTarget) -> KubernetesCompute:
        """One attach per compute name, shared by every flow deployed to it."""
        if target.compute_name not in self.computes:
            self.computes[target.compute_name] = KubernetesCompute(
                self,
                f"kubernetes_{re.sub(r'[^a-z0-9]', '_', target.compute_name.lower())}",
                provider=self.azapi,
                target=target,
                workspace_id=self.workspace.workspace_id,
                location=self.workspace.location,
                tags=self.tags,
            )
        return self.computes[target.compute_name]

    def _grants(self) -> None:
        cfg, ws = self.config, self.workspace
        assert cfg.azure is not None and cfg.identities is not None
        ids = cfg.identities
        deployer = Principal("deployer", ids.deployer_object_id, ids.deployer_principal_type)
        self.access = Access(
            self,
            "access",
            subscription_id=cfg.azure.subscription_id,
            scopes=Scopes(
                workspace_id=ws.workspace_id,
                registry_id=ws.registry.id,
                storage_id=ws.storage.id,
                app_insights_id=ws.app_insights.id,
                log_analytics_id=ws.log_analytics.id,
            ),
            deployer=deployer,
            endpoints=self.endpoint_identities,
            web=self.web_identities,
            computes=[
                Principal(
                    f"compute_{re.sub(r'[^a-z0-9]', '_', name.lower())}",
                    c.principal_id,
                    managed_identity=True,
                )
                for name, c in self.computes.items()
                if c.principal_id is not None
            ],
            readers=[Principal(f"reader_{i}", oid, "Group") for i, oid in enumerate(ids.readers)],
            web_apps=[(f"app_{flow.replace('-', '_')}", app.app_id) for flow, app in self.web_apps.items()],
            batch=[Principal("batch", self.batch.principal_id, managed_identity=True)],
            promoters=[Principal(f"promoter_{i}", oid) for i, oid in enumerate(ids.promoters)],
        )
        self.key_vault_access = KeyVaultAccess(
            self,
            "key_vault_access",
            subscription_id=cfg.azure.subscription_id,
            tenant_id=cfg.azure.tenant_id,
            key_vault_id=ws.key_vault.id,
            authorization=cfg.key_vault.authorization,
            readers=self.web_identities,
        )
        self.rbac_wait = TimeSleep(
            self,
            "rbac_propagation",
            provider=self.time,
            create_duration=RBAC_PROPAGATION,
            after=[*self.access.assignments, *self.key_vault_access.grants],
        )

    def _secrets(self) -> None:
        """Secrets App Service reads by Key Vault reference: the App Insights connection string
        always; connection keys given by ``secret: {env: VAR}`` when a flow runs on App Service."""
        cfg, ws = self.config, self.workspace
        env_keys = {}
        if self.web_apps:
            for connection in cfg.connections:
                if connection.auth_type == "ApiKey" and isinstance(connection.secret, EnvSecret):
                    variable = self.connections.variables[naming.tf_variable(connection.secret.env)]
                    env_keys[connection.secret.env] = (variable, connection.key_version)
        self.secrets = VaultSecrets(
            self,
            "vault_secrets",
            cfg=cfg,
            provider=self.azapi,
            key_vault_id=ws.key_vault.id,
            app_insights_connection_string=ws.app_insights.connection_string,
            app_insights_id=ws.app_insights.id,
            env_keys=env_keys,
            after=[self.rbac_wait],
            tags=self.tags,
        )

    def _outputs(self) -> None:
        """What the release tooling reads after apply (``terraform output -json``)."""
        cfg, ws = self.config, self.workspace
        assert cfg.network is not None
        outputs: dict[str, Any] = {
            "network_profile": cfg.network.profile,
            "resource_group_name": ws.resource_group_name,
            "workspace_name": ws.workspace.name,
            "workspace_id": ws.workspace_id,
            "workspace_principal_id": ws.workspace_principal_id,
            "registry_name": ws.registry.name,
            "registry_login_server": ws.registry.login_server,
            "key_vault_name": ws.key_vault.name,
            "key_vault_uri": ws.key_vault.vault_uri,
            "storage_account_name": ws.storage.name,
            "batch_compute_name": self.batch.name,
            "batch_compute_principal_id": self.batch.principal_id,
            "key_vault_secrets": sorted(self.secrets.secrets),
            "flows": self.flows_output,
        }
        if self.agent_pool is not None:
            outputs["agent_pool"] = {
                "name": self.agent_pool.pool_name,
                "scale_set_id": self.agent_pool.scale_set.id,
                "identity_principal_id": self.agent_pool.identity.principal_id,
                "identity_client_id": self.agent_pool.identity.client_id,
            }
        for name, value in outputs.items():
            cdktf.TerraformOutput(self, name, value=value)
