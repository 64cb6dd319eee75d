"""Outbound rules of the workspace managed network, generated from the config.

- every connection with a ``resource_id``: a private-endpoint rule to that resource (sub-resource
  ``account`` for Azure OpenAI / AI services, ``searchService`` for AI Search);
- the workspace storage's ``queue`` and ``table`` sub-resources (prompt flow parallel jobs);
  Azure ML creates the rules for blob, file, Key Vault and registry itself;
- with ``allow_only_approved_outbound``: an FQDN rule per ``network.egress_fqdns`` entry and per
  OpenAI / custom-key connection host (FQDN rules run on a managed Azure Firewall, billed).
Source: https://learn.microsoft.com/azure/machine-learning/how-to-managed-network
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

from cdktf_cdktf_provider_azurerm.machine_learning_workspace_network_outbound_rule_fqdn import (
    MachineLearningWorkspaceNetworkOutboundRuleFqdn,
)
from cdktf_cdktf_provider_azurerm.machine_learning_workspace_network_outbound_rule_private_endpoint import (
    MachineLearningWorkspaceNetworkOutboundRulePrivateEndpoint,
)
from constructs import Construct

from infra.validate import PRIVATE_LINK_CATEGORIES
from release.config import EnvironmentConfig

STORAGE_RULES = ("queue", "table")


def _rule_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60]


class OutboundRules(Construct):
    """Exposes ``private_endpoint_rules`` and ``fqdn_rules`` (rule name -> resource)."""

    def __init__(
        self, scope: Construct, id: str, *, cfg: EnvironmentConfig, workspace_id: str, storage_id: str
    ) -> None:
        super().__init__(scope, id)
        assert cfg.network is not None
        self.private_endpoint_rules: dict[
            str, MachineLearningWorkspaceNetworkOutboundRulePrivateEndpoint
        ] = {}
        self.fqdn_rules: dict[str, MachineLearningWorkspaceNetworkOutboundRuleFqdn] = {}

        def private_endpoint(name: str, resource_id: str, sub_resource: str) -> None:
            self.private_endpoint_rules[name] = MachineLearningWorkspaceNetworkOutboundRulePrivateEndpoint(
                self,
                name.replace("-", "_"),
                name=name,
                workspace_id=workspace_id,
                service_resource_id=resource_id,
                sub_resource_target=sub_resource,
                spark_enabled=False,
            )

        for connection in cfg.connections:
            if connection.resource_id is not None and connection.category in PRIVATE_LINK_CATEGORIES:
                private_endpoint(
                    _rule_name(f"pe-{connection.name}"),
                    connection.resource_id,
                    PRIVATE_LINK_CATEGORIES[connection.category],
                )
        if not cfg.workspace.public_network_access or cfg.network.profile == "private":
            for sub in STORAGE_RULES:
                private_endpoint(f"pe-storage-{sub}", storage_id, sub)
        if cfg.workspace.managed_network.isolation != "allow_only_approved_outbound":
            return
        hosts = list(cfg.network.egress_fqdns)
        for connection in cfg.connections:
            if connection.category not in PRIVATE_LINK_CATEGORIES:
                hosts.append(urlparse(connection.target).hostname or connection.target)
        for host in sorted(set(h.lower() for h in hosts)):
            name = _rule_name(f"fqdn-{host}")
            self.fqdn_rules[name] = MachineLearningWorkspaceNetworkOutboundRuleFqdn(
                self, name.replace("-", "_"), name=name, workspace_id=workspace_id, destination_fqdn=host
            )
