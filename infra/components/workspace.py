"""The Azure ML workspace and what it stands on: resource group, storage, Key Vault,
Log Analytics + Application Insights, container registry. Secure defaults live here.

Reachability follows ``network.profile`` through each resource's ``public_network_access``
(release/config.py fills it from the profile): public resources allow every network unless
``network.allowed_ips`` lists who may connect; private ones deny all public traffic and are
reached through the private endpoints of :mod:`infra.components.network`. Either way Entra ID
is the only way in where Azure supports it (no ACR admin user, RBAC vault, App Insights local
auth off) and TLS 1.2 is the minimum.
"""

from __future__ import annotations

from cdktf_cdktf_provider_azurerm.application_insights import ApplicationInsights
from cdktf_cdktf_provider_azurerm.container_registry import (
    ContainerRegistry,
    ContainerRegistryNetworkRuleSet,
    ContainerRegistryNetworkRuleSetIpRule,
)
from cdktf_cdktf_provider_azurerm.data_azurerm_resource_group import DataAzurermResourceGroup
from cdktf_cdktf_provider_azurerm.key_vault import KeyVault, KeyVaultNetworkAcls
from cdktf_cdktf_provider_azurerm.log_analytics_workspace import LogAnalyticsWorkspace
from cdktf_cdktf_provider_azurerm.machine_learning_workspace import (
    MachineLearningWorkspace,
    MachineLearningWorkspaceIdentity,
    MachineLearningWorkspaceManagedNetwork,
)
from cdktf_cdktf_provider_azurerm.resource_group import ResourceGroup
from cdktf_cdktf_provider_azurerm.storage_account import (
    StorageAccount,
    StorageAccountBlobProperties,
    StorageAccountBlobPropertiesContainerDeleteRetentionPolicy,
    StorageAccountBlobPropertiesDeleteRetentionPolicy,
    StorageAccountNetworkRules,
    StorageAccountSasPolicy,
)
from constructs import Construct

from infra import naming
from release.config import EnvironmentConfig

ISOLATION = {
    "disabled": "Disabled",
    "allow_internet_outbound": "AllowInternetOutbound",
    "allow_only_approved_outbound": "AllowOnlyApprovedOutbound",
}


class Workspace(Construct):
    """Exposes ``resource_group_name``, ``location`` and the ids/names of every resource."""

    def __init__(self, scope: Construct, id: str, cfg: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        assert cfg.azure is not None
        azure = cfg.azure
        tags = dict(azure.tags)
        self.location = azure.location
        self.resource_group_name = cfg.resource_group_name

        if azure.resource_group.create:
            group = ResourceGroup(
                self, "rg", name=self.resource_group_name, location=azure.location, tags=tags
            )
            self.resource_group_id = group.id
        else:
            existing = DataAzurermResourceGroup(self, "rg", name=self.resource_group_name)
            self.resource_group_id = existing.id
        rg = self.resource_group_name
        depends = [group] if azure.resource_group.create else []
        self.depends = depends  # what a resource in the group must wait for (the group itself)

        public_workspace = cfg.workspace.public_network_access
        allowed_ips = list(cfg.network.allowed_ips) if cfg.network else []

        def default_action(public: bool) -> str:
            return "Allow" if public and not allowed_ips else "Deny"

        self.storage = StorageAccount(
            self,
            "storage",
            name=naming.storage_account(cfg),
            resource_group_name=rg,
            location=azure.location,
            account_tier="Standard",
            account_replication_type="GZRS",
            account_kind="StorageV2",
            min_tls_version="TLS1_2",
            https_traffic_only_enabled=True,
            allow_nested_items_to_be_public=False,
            public_network_access_enabled=public_workspace,
            # Azure ML's default datastores still use the account key (see policy/checkov.yaml)
            shared_access_key_enabled=True,
            default_to_oauth_authentication=True,
            cross_tenant_replication_enabled=False,
            local_user_enabled=False,
            sftp_enabled=False,
            infrastructure_encryption_enabled=True,
            sas_policy=StorageAccountSasPolicy(expiration_period="01.00:00:00"),
            network_rules=StorageAccountNetworkRules(
                default_action=default_action(public_workspace),
                bypass=["AzureServices"],
                ip_rules=[ip.removesuffix("/32") for ip in allowed_ips] if public_workspace else None,
            ),
            blob_properties=StorageAccountBlobProperties(
                versioning_enabled=True,
                delete_retention_policy=StorageAccountBlobPropertiesDeleteRetentionPolicy(days=7),
                container_delete_retention_policy=(
                    StorageAccountBlobPropertiesContainerDeleteRetentionPolicy(days=7)
                ),
            ),
            tags=tags,
            depends_on=depends,
        )

        kv = cfg.key_vault
        self.key_vault = KeyVault(
            self,
            "key_vault",
            name=naming.key_vault(cfg),
            resource_group_name=rg,
            location=azure.location,
            tenant_id=azure.tenant_id,
            sku_name="standard",
            rbac_authorization_enabled=kv.authorization == "rbac",
            purge_protection_enabled=kv.purge_protection,
            soft_delete_retention_days=kv.soft_delete_retention_days,
            public_network_access_enabled=kv.public_network_access,
            network_acls=KeyVaultNetworkAcls(
                default_action=default_action(kv.public_network_access),
                bypass="AzureServices",
                ip_rules=allowed_ips if kv.public_network_access else None,
            ),
            tags=tags,
            depends_on=depends,
        )
        self.key_vault_authorization = kv.authorization
        self.tenant_id = azure.tenant_id

        self.log_analytics = LogAnalyticsWorkspace(
            self,
            "log_analytics",
            name=naming.log_analytics(cfg),
            resource_group_name=rg,
            location=azure.location,
            sku="PerGB2018",
            retention_in_days=cfg.workspace.log_retention_days,
            tags=tags,
            depends_on=depends,
        )
        self.app_insights = ApplicationInsights(
            self,
            "app_insights",
            name=naming.app_insights(cfg),
            resource_group_name=rg,
            location=azure.location,
            application_type="web",
            workspace_id=self.log_analytics.id,  # without it the resource drifts on every plan
            local_authentication_disabled=True,
            tags=tags,
        )

        reg = cfg.registry
        premium = reg.sku == "Premium"
        self.registry = ContainerRegistry(
            self,
            "registry",
            name=naming.container_registry(cfg),
            resource_group_name=rg,
            location=azure.location,
            sku=reg.sku,
            admin_enabled=reg.admin_enabled,
            anonymous_pull_enabled=False,
            public_network_access_enabled=reg.public_network_access,
            network_rule_set=(
                [
                    ContainerRegistryNetworkRuleSet(
                        default_action=default_action(reg.public_network_access),
                        ip_rule=[
                            ContainerRegistryNetworkRuleSetIpRule(action="Allow", ip_range=ip)
                            for ip in allowed_ips
                        ]
                        if reg.public_network_access and allowed_ips
                        else None,
                    )
                ]
                if premium
                else None
            ),
            network_rule_bypass_option="AzureServices",
            # quarantine blocks every pull until a scanner marks the image Passed (H3); on only
            # with a scanner (infra/validate.py): https://github.com/Azure/acr/blob/main/docs/preview/quarantine/readme.md
            quarantine_policy_enabled=(reg.quarantine if premium else None),
            retention_policy_in_days=7 if premium else None,
            # Docker Content Trust is being retired (removed 2028-03-31): not enabled
            trust_policy_enabled=False if premium else None,
            zone_redundancy_enabled=premium or None,
            data_endpoint_enabled=premium or None,
            export_policy_enabled=(reg.public_network_access if premium else None),
            tags=tags,
            depends_on=depends,
        )

        isolation = cfg.workspace.managed_network.isolation
        self.workspace = MachineLearningWorkspace(
            self,
            "workspace",
            name=naming.ml_workspace(cfg),
            resource_group_name=rg,
            location=azure.location,
            application_insights_id=self.app_insights.id,
            key_vault_id=self.key_vault.id,
            storage_account_id=self.storage.id,
            container_registry_id=self.registry.id,
            identity=MachineLearningWorkspaceIdentity(type="SystemAssigned"),
            public_network_access_enabled=public_workspace,
            high_business_impact=cfg.workspace.high_business_impact,
            sku_name=cfg.workspace.sku,
            v1_legacy_mode_enabled=False,
            managed_network=MachineLearningWorkspaceManagedNetwork(
                isolation_mode=ISOLATION[isolation],
                # provision the managed network with the workspace, not on the first compute:
                # that first provisioning takes ~30 min and would exceed the compute cluster's
                # create timeout (https://learn.microsoft.com/azure/machine-learning/how-to-managed-network)
                provision_on_creation_enabled=isolation != "disabled" or None,
            ),
            tags=tags,
        )
        self.workspace_name = naming.ml_workspace(cfg)
        self.workspace_id = self.workspace.id
        self.workspace_principal_id = self.workspace.identity.principal_id
