"""The private profile's network: VNet, subnets, NSG, NAT gateway, private DNS zones, and the
private endpoints that make each resource reachable from inside the VNet only.

Subnets (ranges from ``network.subnets``): ``snet-private-endpoints`` (every private endpoint),
``snet-app-service`` (App Service VNet integration, delegated to Microsoft.Web/serverFarms),
``snet-agents`` (the self-hosted agent pool) and ``snet-compute`` (the batch cluster when the
workspace has no managed network). Agents and compute leave through a NAT gateway: Azure no
longer gives new VMs default outbound access
(https://learn.microsoft.com/azure/virtual-network/ip-services/default-outbound-access).
DNS zone names: https://learn.microsoft.com/azure/private-link/private-endpoint-dns
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cdktf_cdktf_provider_azurerm.nat_gateway import NatGateway
from cdktf_cdktf_provider_azurerm.nat_gateway_public_ip_association import NatGatewayPublicIpAssociation
from cdktf_cdktf_provider_azurerm.network_security_group import NetworkSecurityGroup
from cdktf_cdktf_provider_azurerm.private_dns_zone import PrivateDnsZone
from cdktf_cdktf_provider_azurerm.private_dns_zone_virtual_network_link import (
    PrivateDnsZoneVirtualNetworkLink,
)
from cdktf_cdktf_provider_azurerm.private_endpoint import (
    PrivateEndpoint,
    PrivateEndpointPrivateDnsZoneGroup,
    PrivateEndpointPrivateServiceConnection,
)
from cdktf_cdktf_provider_azurerm.public_ip import PublicIp
from cdktf_cdktf_provider_azurerm.subnet import Subnet, SubnetDelegation, SubnetDelegationServiceDelegation
from cdktf_cdktf_provider_azurerm.subnet_nat_gateway_association import SubnetNatGatewayAssociation
from cdktf_cdktf_provider_azurerm.subnet_network_security_group_association import (
    SubnetNetworkSecurityGroupAssociation,
)
from cdktf_cdktf_provider_azurerm.virtual_network import VirtualNetwork
from constructs import Construct

from infra import naming
from release.config import EnvironmentConfig

# private endpoint sub-resource -> the private DNS zones its records go to
DNS_ZONES: dict[str, tuple[str, ...]] = {
    "vault": ("privatelink.vaultcore.azure.net",),
    "registry": ("privatelink.azurecr.io",),
    "blob": ("privatelink.blob.core.windows.net",),
    "file": ("privatelink.file.core.windows.net",),
    "queue": ("privatelink.queue.core.windows.net",),
    "table": ("privatelink.table.core.windows.net",),
    "amlworkspace": ("privatelink.api.azureml.ms", "privatelink.notebooks.azure.net"),
    "sites": ("privatelink.azurewebsites.net",),
}
# what the workspace's default storage needs: blob and file (datastores), queue and table
# (prompt flow parallel jobs): https://learn.microsoft.com/azure/machine-learning/how-to-managed-network
STORAGE_SUBRESOURCES = ("blob", "file", "queue", "table")


class Network(Construct):
    """Exposes ``vnet``, ``subnet_ids`` (kind -> id), ``zone_ids`` (zone -> id) and
    :meth:`private_endpoint`. Everything is in the environment's resource group."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cfg: EnvironmentConfig,
        resource_group_name: str,
        location: str,
        depends_on: Sequence[object] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        assert cfg.network is not None
        settings = cfg.network
        self._cfg = cfg
        self._rg = resource_group_name
        self._location = location
        self._tags = dict(tags or {})
        deps = list(depends_on) or None
        self.vnet = VirtualNetwork(
            self,
            "vnet",
            name=naming.virtual_network(cfg),
            resource_group_name=resource_group_name,
            location=location,
            address_space=[settings.address_space],
            tags=self._tags,
            depends_on=deps,  # type: ignore[arg-type]
        )
        self.nsg = NetworkSecurityGroup(
            self,
            "nsg",
            name=naming.network_security_group(cfg),
            resource_group_name=resource_group_name,
            location=location,
            tags=self._tags,
            depends_on=deps,  # type: ignore[arg-type]
        )
        self.public_ip = PublicIp(
            self,
            "nat_ip",
            name=f"{naming.base(cfg)}-nat-pip",
            resource_group_name=resource_group_name,
            location=location,
            allocation_method="Static",
            sku="Standard",
            tags=self._tags,
            depends_on=deps,  # type: ignore[arg-type]
        )
        self.nat = NatGateway(
            self,
            "nat",
            name=f"{naming.base(cfg)}-nat",
            resource_group_name=resource_group_name,
            location=location,
            sku_name="Standard",
            tags=self._tags,
            depends_on=deps,  # type: ignore[arg-type]
        )
        NatGatewayPublicIpAssociation(
            self, "nat_ip_association", nat_gateway_id=self.nat.id, public_ip_address_id=self.public_ip.id
        )
        self.subnet_ids: dict[str, str] = {}
        ranges = settings.subnets.model_dump()
        for kind in naming.SUBNETS:
            delegation = None
            if kind == "app_service":
                delegation = [
                    SubnetDelegation(
                        name="app-service",
                        service_delegation=SubnetDelegationServiceDelegation(
                            name="Microsoft.Web/serverFarms",
                            actions=["Microsoft.Network/virtualNetworks/subnets/action"],
                        ),
                    )
                ]
            subnet = Subnet(
                self,
                f"subnet_{kind}",
                name=naming.subnet(kind),
                resource_group_name=resource_group_name,
                virtual_network_name=self.vnet.name,
                address_prefixes=[ranges[kind]],
                default_outbound_access_enabled=False,
                private_endpoint_network_policies="Enabled" if kind == "private_endpoints" else None,
                delegation=delegation,
            )
            SubnetNetworkSecurityGroupAssociation(
                self, f"subnet_{kind}_nsg", subnet_id=subnet.id, network_security_group_id=self.nsg.id
            )
            if kind in ("agents", "compute"):
                SubnetNatGatewayAssociation(
                    self, f"subnet_{kind}_nat", subnet_id=subnet.id, nat_gateway_id=self.nat.id
                )
            self.subnet_ids[kind] = subnet.id

        self.zone_ids: dict[str, str] = {}
        links = [("vnet", self.vnet.id), *((f"link{i}", v) for i, v in enumerate(settings.dns_zone_links))]
        for zone in sorted({z for zones in DNS_ZONES.values() for z in zones}):
            key = zone.replace(".", "_")
            dns = PrivateDnsZone(
                self,
                f"zone_{key}",
                name=zone,
                resource_group_name=resource_group_name,
                tags=self._tags,
                depends_on=deps,  # type: ignore[arg-type]
            )
            for label, vnet_id in links:
                PrivateDnsZoneVirtualNetworkLink(
                    self,
                    f"zone_{key}_{label}",
                    name=f"{naming.base(cfg)}-{label}",
                    resource_group_name=resource_group_name,
                    private_dns_zone_name=dns.name,
                    virtual_network_id=vnet_id,
                    registration_enabled=False,
                    tags=self._tags,
                )
            self.zone_ids[zone] = dns.id
        self.private_endpoints: dict[str, PrivateEndpoint] = {}

    def private_endpoint(self, what: str, resource_id: str, subresource: str) -> PrivateEndpoint:
        """A private endpoint for ``resource_id``'s ``subresource`` (``vault``, ``blob``,
        ``sites-staging``...) in ``snet-private-endpoints``, registered in its DNS zone(s)."""
        zones = DNS_ZONES["sites" if subresource.startswith("sites") else subresource]
        name = naming.private_endpoint(self._cfg, what)
        endpoint = PrivateEndpoint(
            self,
            f"pe_{what}",
            name=name,
            resource_group_name=self._rg,
            location=self._location,
            subnet_id=self.subnet_ids["private_endpoints"],
            private_service_connection=PrivateEndpointPrivateServiceConnection(
                name=f"{name}-connection",
                is_manual_connection=False,
                private_connection_resource_id=resource_id,
                subresource_names=[subresource],
            ),
            private_dns_zone_group=PrivateEndpointPrivateDnsZoneGroup(
                name="default", private_dns_zone_ids=[self.zone_ids[z] for z in zones]
            ),
            tags=self._tags,
        )
        self.private_endpoints[what] = endpoint
        return endpoint
