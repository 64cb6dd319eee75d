"""One stack per Azure environment: composes the components and wires grants between them."""

from __future__ import annotations

import re
from typing import Any

import cdktf
from cdktf_cdktf_provider_azurerm.provider import AzurermProvider
from constructs import Construct

from infra import naming
from infra.azapi import AzapiProvider
from infra.components.access import Access, Principal, Scopes
from infra.components.app_service import WebApp, key_vault_reference
from infra.components.batch_compute import BatchCompute
from infra.components.connections import Connections
from infra.components.endpoints import OnlineEndpoint
from infra.components.key_vault_access import KeyVaultAccess
from infra.components.kubernetes import KubernetesCompute
from infra.components.vault_secrets import VaultSecrets
from infra.components.workspace import Workspace
from infra.validate import check
from release.azure.names import app_insights_secret
from release.config import (
    AppServiceTarget,
    EnvironmentConfig,
    EnvSecret,
    KubernetesTarget,
    ManagedTarget,
)


class EnvironmentStack(cdktf.TerraformStack):
    """The stack ``<env>``. Attributes: ``workspace``, ``connections``, ``batch``, ``endpoints``,
    ``web_apps``, ``computes``, ``access``, ``key_vault_access``, ``secrets``, ``config``."""

    def __init__(self, scope: Construct, cfg: EnvironmentConfig) -> None:
        check(cfg)
        assert cfg.azure is not None and cfg.state is not None and cfg.identities is not None
        super().__init__(scope, cfg.environment)
        self.config = cfg
        self.tags = dict(cfg.azure.tags)
        self.azapi = self._providers_and_backend()
        self.workspace = Workspace(self, "workspace", cfg)
        self.connections = Connections(
            self,
            "connections",
            provider=self.azapi,
            workspace_id=self.workspace.workspace_id,
            key_vault_id=self.workspace.key_vault.id,
            connections=cfg.connections,
        )
        self.batch = BatchCompute(
            self,
            "batch_compute",
            name=cfg.workspace.batch_compute,
            workspace_id=self.workspace.workspace_id,
            location=self.workspace.location,
            vm_size=cfg.workspace.batch_vm_size,
            max_nodes=cfg.workspace.batch_max_nodes,
            managed_network=cfg.workspace.managed_network.isolation != "disabled",
            tags=self.tags,
        )
        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.web_apps: dict[str, WebApp] = {}
        self.computes: dict[str, KubernetesCompute] = {}
        self.runtime: list[Principal] = []  # identities that run flows
        self.web_identities: list[Principal] = []  # web apps and slots (send telemetry)
        self.flows_output: dict[str, Any] = {}
        for flow in cfg.flows:
            self._deployment(flow)
        self._grants()
        self._secrets()
        self._outputs()

    def _providers_and_backend(self) -> AzapiProvider:
        cfg = self.config
        assert cfg.azure is not None and cfg.state is not None
        AzurermProvider(
            self,
            "azurerm",
            features=[
                {
                    "key_vault": [
                        {"purge_soft_delete_on_destroy": False, "recover_soft_deleted_key_vaults": True}
                    ],
                    "resource_group": [{"prevent_deletion_if_contains_resources": True}],
                }
            ],
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
        return AzapiProvider(self, "azapi")

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
                require_aad=cfg.workspace.require_aad_auth,
                public_network_access=(
                    deployment.public_network_access if isinstance(deployment, ManagedTarget) else None
                ),
                compute_id=compute_id,
                description=f"prompt flow {flow} ({cfg.environment})",
                tags=self.tags,
            )
            self.endpoints[flow] = endpoint
            self.runtime.append(Principal(f"ep_{label}", endpoint.principal_id, managed_identity=True))
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
                tags=self.tags,
            )
            self.web_apps[flow] = app
            identities = [
                Principal(f"app_{label}", app.principal_id, managed_identity=True),
                Principal(f"slot_{label}", app.slot_principal_id, managed_identity=True),
            ]
            self.runtime += identities
            self.web_identities += identities
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
        web_apps = [
            (f"{kind}_{flow.replace('-', '_')}", resource_id)
            for flow, app in self.web_apps.items()
            for kind, resource_id in (("app", app.app_id), ("slot", app.slot_id))
        ]
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
            runtime=self.runtime,
            readers=[Principal(f"reader_{i}", oid, "Group") for i, oid in enumerate(ids.readers)],
            web_apps=web_apps,
            batch=[Principal("batch", self.batch.principal_id, managed_identity=True)],
            telemetry=self.web_identities,
        )
        self.key_vault_access = KeyVaultAccess(
            self,
            "key_vault_access",
            subscription_id=cfg.azure.subscription_id,
            tenant_id=cfg.azure.tenant_id,
            key_vault_id=ws.key_vault.id,
            authorization=cfg.key_vault.authorization,
            readers=self.runtime,
            writers=[deployer],
            apply_identity_unless=ids.deployer_object_id,
        )

    def _secrets(self) -> None:
        """Secrets App Service reads by Key Vault reference: the App Insights connection string
        always; connection keys given by ``secret: {env: VAR}`` when a flow runs on App Service."""
        cfg, ws = self.config, self.workspace
        env_keys = {}
        if self.web_apps:
            for connection in cfg.connections:
                if connection.auth_type == "ApiKey" and isinstance(connection.secret, EnvSecret):
                    variable = naming.tf_variable(connection.secret.env)
                    env_keys[connection.secret.env] = self.connections.variables[variable]
        self.secrets = VaultSecrets(
            self,
            "vault_secrets",
            cfg=cfg,
            key_vault_id=ws.key_vault.id,
            app_insights_connection_string=ws.app_insights.connection_string,
            env_keys=env_keys,
            after=self.key_vault_access.writer_grants,
            tags=self.tags,
        )

    def _outputs(self) -> None:
        """What the release tooling reads after apply (``terraform output -json``)."""
        ws = self.workspace
        outputs: dict[str, Any] = {
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
        for name, value in outputs.items():
            cdktf.TerraformOutput(self, name, value=value)
