"""The self-hosted CI agents of the private profile: a Linux VM scale set in ``snet-agents`` with a
user-assigned identity, shaped for an Azure DevOps scale-set agent pool.

Azure DevOps installs the agent on each instance and scales the set itself, so the set starts
at 0 instances, never overprovisions, upgrades manually and Terraform ignores ``instances`` and
``extension`` afterwards (https://learn.microsoft.com/azure/devops/pipelines/agents/scale-set-agents).
Registering the pool is one call after the first apply (docs/first-deployment.md). SSH: key
only, no password. The identity holds no role by default; it exists so a "Managed identity"
service connection can use it (then set ``identities.deployer_object_id`` to its principal id).
"""

from __future__ import annotations

from collections.abc import Mapping

import cdktf
from cdktf_cdktf_provider_azurerm.linux_virtual_machine_scale_set import (
    LinuxVirtualMachineScaleSet,
    LinuxVirtualMachineScaleSetAdminSshKey,
    LinuxVirtualMachineScaleSetIdentity,
    LinuxVirtualMachineScaleSetNetworkInterface,
    LinuxVirtualMachineScaleSetNetworkInterfaceIpConfiguration,
    LinuxVirtualMachineScaleSetOsDisk,
    LinuxVirtualMachineScaleSetSourceImageReference,
)
from cdktf_cdktf_provider_azurerm.user_assigned_identity import UserAssignedIdentity
from constructs import Construct

from infra import naming
from release.config import AgentPool as AgentPoolSettings
from release.config import EnvironmentConfig

# what Azure DevOps owns once the set is registered as a scale-set agent pool
ADO_OWNED = [
    "instances",
    "extension",
    'tags["__AzureDevOpsElasticPool"]',
    'tags["__AzureDevOpsElasticPoolTimeStamp"]',
]


class AgentPool(Construct):
    """Exposes ``scale_set``, ``identity`` (``principal_id``, ``client_id``) and ``pool_name``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cfg: EnvironmentConfig,
        settings: AgentPoolSettings,
        subnet_id: str,
        resource_group_name: str,
        location: str,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.pool_name = settings.name
        self.identity = UserAssignedIdentity(
            self,
            "identity",
            name=naming.agent_identity(cfg),
            resource_group_name=resource_group_name,
            location=location,
            tags=dict(tags or {}),
        )
        publisher, offer, sku, version = settings.image.split(":")
        self.scale_set = LinuxVirtualMachineScaleSet(
            self,
            "scale_set",
            name=naming.agent_scale_set(cfg),
            resource_group_name=resource_group_name,
            location=location,
            sku=settings.vm_size,
            instances=0,
            admin_username=settings.admin_username,
            admin_ssh_key=[
                LinuxVirtualMachineScaleSetAdminSshKey(
                    username=settings.admin_username, public_key=settings.ssh_public_key
                )
            ],
            disable_password_authentication=True,
            source_image_reference=LinuxVirtualMachineScaleSetSourceImageReference(
                publisher=publisher, offer=offer, sku=sku, version=version
            ),
            os_disk=LinuxVirtualMachineScaleSetOsDisk(
                caching="ReadOnly", storage_account_type="Standard_LRS"
            ),
            network_interface=[
                LinuxVirtualMachineScaleSetNetworkInterface(
                    name="agents",
                    primary=True,
                    ip_configuration=[
                        LinuxVirtualMachineScaleSetNetworkInterfaceIpConfiguration(
                            name="agents", primary=True, subnet_id=subnet_id
                        )
                    ],
                )
            ],
            identity=LinuxVirtualMachineScaleSetIdentity(
                type="UserAssigned", identity_ids=[self.identity.id]
            ),
            overprovision=False,
            single_placement_group=False,
            upgrade_mode="Manual",
            encryption_at_host_enabled=None,
            provision_vm_agent=True,
            extension_operations_enabled=True,  # Azure DevOps installs the agent as an extension
            tags=dict(tags or {}),
            lifecycle=cdktf.TerraformResourceLifecycle(ignore_changes=ADO_OWNED),
        )
