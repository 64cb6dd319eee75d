"""Prompt flow connections as ``Microsoft.MachineLearningServices/workspaces/connections``.

The key never appears in the synthesized JSON:
- ``secret: {env: VAR}``: a sensitive, ephemeral Terraform variable ``secret_<var>``;
  ``genaiops plan``/``apply`` pass ``TF_VAR_secret_<var>`` from ``$VAR`` to terraform (in
  memory only; an ephemeral variable is not written to the saved plan file);
- ``secret: {key_vault_secret: NAME}``: an ephemeral ``azurerm_key_vault_secret`` read at
  plan/apply time (never stored in state).
Either value goes to azapi's write-only ``sensitive_body``, which is not stored in state, with
``sensitive_body_version = {"properties.credentials.key": "<key_version>"}``: rotating a key means
bumping the connection's ``key_version`` in config, and the next plan updates the connection
(a write-only value is never diffed, so without the bump the new key would not be sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cdktf
from constructs import Construct

from infra import naming
from infra.azapi import AzapiProvider, AzapiResource
from release.config import Connection, EnvSecret, KeyVaultSecret

CONNECTION_TYPE = "Microsoft.MachineLearningServices/workspaces/connections@2024-04-01"
KEY_PATH = "properties.credentials.key"  # the write-only key's path in sensitive_body


def connection_body(connection: Connection) -> dict[str, Any]:
    """The non-secret request body, in the 2024-04-01 REST shape."""
    properties: dict[str, Any] = {
        "category": connection.category,
        "authType": connection.auth_type,
        "target": connection.target,
        "isSharedToAll": connection.shared_to_all,
    }
    metadata = {
        key: value
        for key, value in (
            ("ApiType", connection.api_type),
            ("ApiVersion", connection.api_version),
            ("ResourceId", connection.resource_id),
        )
        if value is not None
    }
    if metadata:
        properties["metadata"] = metadata
    return {"properties": properties}


class Connections(Construct):
    """Exposes ``resources``: connection name -> azapi resource."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: AzapiProvider,
        workspace_id: str,
        key_vault_id: str,
        connections: Sequence[Connection],
    ) -> None:
        super().__init__(scope, id)
        self.resources: dict[str, AzapiResource] = {}
        self.variables: dict[str, cdktf.TerraformVariable] = {}
        stack = cdktf.TerraformStack.of(self)
        for connection in connections:
            sensitive_body = sensitive_body_version = None
            if connection.auth_type == "ApiKey" and connection.secret is not None:
                key = self._key_reference(stack, connection.secret, key_vault_id)
                sensitive_body = {"properties": {"credentials": {"key": key}}}
                sensitive_body_version = {KEY_PATH: str(connection.key_version)}
            self.resources[connection.name] = AzapiResource(
                self,
                connection.name,
                provider=provider,
                type=CONNECTION_TYPE,
                name=connection.name,
                parent_id=workspace_id,
                body=connection_body(connection),
                sensitive_body=sensitive_body,
                sensitive_body_version=sensitive_body_version,
            )

    def _key_reference(
        self, stack: cdktf.TerraformStack, secret: EnvSecret | KeyVaultSecret, key_vault_id: str
    ) -> str:
        if isinstance(secret, EnvSecret):
            name = naming.tf_variable(secret.env)
            if name not in self.variables:
                variable = cdktf.TerraformVariable(
                    self,
                    name,
                    type="string",
                    sensitive=True,
                    nullable=False,
                    description=f"connection key; genaiops plan sets TF_VAR_{name} from ${secret.env}",
                )
                variable.override_logical_id(name)
                # ephemeral (Terraform >= 1.10): kept out of state AND out of the saved plan file
                variable.add_override("ephemeral", True)
                self.variables[name] = variable
            return f"${{var.{name}}}"
        logical = "kv_" + secret.key_vault_secret.replace("-", "_").lower()
        stack.add_override(
            f"ephemeral.azurerm_key_vault_secret.{logical}",
            {"name": secret.key_vault_secret, "key_vault_id": key_vault_id},
        )
        return f"${{ephemeral.azurerm_key_vault_secret.{logical}.value}}"
