"""Azure ML online endpoints (managed, or on an attached Kubernetes compute) via azapi.

The endpoint is long-lived and owned here; deployments and traffic belong to the release
tooling (``release/targets/``), so the body declares neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from constructs import Construct

from infra.azapi import AzapiProvider, AzapiResource

ENDPOINT_TYPE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-04-01"
AUTH_MODES = {"aad_token": "AADToken", "aml_token": "AMLToken", "key": "Key"}
# Tag read by the policy check infra/policy/checks/endpoint_auth_mode.yaml
AUTH_POLICY_TAG = "genaiops-auth-policy"


class OnlineEndpoint(Construct):
    """Exposes ``endpoint_name``, ``resource`` (id) and ``principal_id`` (system identity)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: AzapiProvider,
        name: str,
        workspace_id: str,
        location: str,
        auth_mode: Literal["aad_token", "aml_token", "key"],
        require_aad: bool,
        public_network_access: bool | None = False,
        compute_id: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        properties: dict[str, Any] = {"authMode": AUTH_MODES[auth_mode]}
        if description:
            properties["description"] = description
        if public_network_access is not None:
            properties["publicNetworkAccess"] = "Enabled" if public_network_access else "Disabled"
        if compute_id is not None:
            properties["compute"] = compute_id
        self.endpoint_name = name
        self.resource = AzapiResource(
            self,
            "endpoint",
            provider=provider,
            type=ENDPOINT_TYPE,
            name=name,
            parent_id=workspace_id,
            location=location,
            identity="SystemAssigned",
            body={"properties": properties},
            tags={**(tags or {}), AUTH_POLICY_TAG: "aad-required" if require_aad else "any"},
        )
        self.principal_id = self.resource.principal_id
