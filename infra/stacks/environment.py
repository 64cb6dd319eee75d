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
from infra.components.app_service import WebApp
from infra.components.connections import Connections
from infra.components.endpoints import OnlineEndpoint
from infra.components.key_vault_access import KeyVaultAccess
from infra.components.kubernetes import KubernetesCompute
from infra.components.workspace import Workspace
from infra.validate import check
from release.config import AppServiceTarget, EnvironmentConfig, KubernetesTarget, ManagedTarget


class EnvironmentStack(cdktf.TerraformStack):
    """Attributes: ``workspace``, ``endpoints``, ``web_apps``, ``access``, ``key_vault_access``."""

    def __init__(self, scope: Construct, cfg: EnvironmentConfig) -> None:
        check(cfg)
        assert cfg.azure is not None and cfg.state is not None and cfg.identities is not None
        super().__init__(scope, cfg.environment)
        self.config = cfg
        azure = cfg.azure
        tags = dict(azure.tags)

        AzurermProvider(
            self,
            "azurerm",
            features=[
                {
                    "key_vault": [
                        {
                            "purge_soft_delete_on_destroy": False,
                            "recover_soft_deleted_key_vaults": True,
                        }
                    ],
                    "resource_group": [{"prevent_deletion_if_contains_resources": True}],
                }
            ],
            subscription_id=azure.subscription_id,
            tenant_id=azure.tenant_id,
            storage_use_azuread=True,
        )
        azapi = AzapiProvider(self, "azapi")
        state = cfg.state
        cdktf.AzurermBackend(
            self,
            resource_group_name=state.resource_group,
            storage_account_name=state.storage_account,
            container_name=state.container,
            key=state.key,
            use_azuread_auth=state.use_azuread_auth,
            subscription_id=azure.subscription_id,
            tenant_id=azure.tenant_id,
        )

        self.workspace = ws = Workspace(self, "workspace", cfg)
        self.connections = Connections(
            self,
            "connections",
            provider=azapi,
            workspace_id=ws.workspace_id,
            key_vault_id=ws.key_vault.id,
            connections=cfg.connections,
        )

        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.web_apps: dict[str, WebApp] = {}
        self.computes: dict[str, KubernetesCompute] = {}
        runtime: list[Principal] = []
        web_app_scopes: list[tuple[str, str]] = []
        flows_output: dict[str, Any] = {}
        for flow, settings in cfg.flows.items():
            deployment = settings.deployment
            label = flow.replace("-", "_")
            name = cfg.endpoint_name(flow)
            if isinstance(deployment, (ManagedTarget, KubernetesTarget)):
                compute_id = None
                if isinstance(deployment, KubernetesTarget):
                    key = f"{deployment.compute_name}"
                    if key not in self.computes:
                        self.computes[key] = KubernetesCompute(
                            self,
                            f"kubernetes_{re.sub(r'[^a-z0-9]', '_', key.lower())}",
                            provider=azapi,
                            target=deployment,
                            workspace_id=ws.workspace_id,
                            location=azure.location,
                            tags=tags,
                        )
                    compute_id = self.computes[key].compute_id
                endpoint = OnlineEndpoint(
                    self,
                    f"endpoint_{label}",
                    provider=azapi,
                    name=name,
                    workspace_id=ws.workspace_id,
                    location=azure.location,
                    auth_mode=deployment.auth_mode,
                    require_aad=cfg.workspace.require_aad_auth,
                    public_network_access=(
                        deployment.public_network_access if isinstance(deployment, ManagedTarget) else None
                    ),
                    compute_id=compute_id,
                    description=f"prompt flow {flow} ({cfg.environment})",
                    tags=tags,
                )
                self.endpoints[flow] = endpoint
                runtime.append(Principal(f"ep_{label}", endpoint.principal_id, managed_identity=True))
                flows_output[flow] = {
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
                    location=azure.location,
                    registry_login_server=ws.registry.login_server,
                    tags=tags,
                )
                self.web_apps[flow] = app
                runtime.append(Principal(f"app_{label}", app.principal_id, managed_identity=True))
                runtime.append(Principal(f"slot_{label}", app.slot_principal_id, managed_identity=True))
                web_app_scopes += [(f"app_{label}", app.app_id), (f"slot_{label}", app.slot_id)]
                flows_output[flow] = {
                    "target": deployment.target,
                    "web_app_name": app.app_name,
                    "slot_name": app.slot_name,
                    "principal_id": app.principal_id,
                    "slot_principal_id": app.slot_principal_id,
                }

        ids = cfg.identities
        deployer = Principal("deployer", ids.deployer_object_id, ids.deployer_principal_type)
        readers = [Principal(f"reader_{i}", oid, "Group") for i, oid in enumerate(ids.readers)]
        self.access = Access(
            self,
            "access",
            subscription_id=azure.subscription_id,
            scopes=Scopes(workspace_id=ws.workspace_id, registry_id=ws.registry.id, storage_id=ws.storage.id),
            deployer=deployer,
            runtime=runtime,
            readers=readers,
            web_apps=web_app_scopes,
        )
        self.key_vault_access = KeyVaultAccess(
            self,
            "key_vault_access",
            subscription_id=azure.subscription_id,
            tenant_id=azure.tenant_id,
            key_vault_id=ws.key_vault.id,
            authorization=cfg.key_vault.authorization,
            readers=runtime,
            writers=[deployer],
        )

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
            "flows": flows_output,
        }
        for name, value in outputs.items():
            if value is None:
                continue
            cdktf.TerraformOutput(self, name, value=value)
