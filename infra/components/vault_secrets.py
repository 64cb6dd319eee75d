"""Key Vault secrets that App Service reads through Key Vault references, written through ARM.

``release/targets/appservice.py`` sets app settings such as
``APPLICATIONINSIGHTS_CONNECTION_STRING=@Microsoft.KeyVault(SecretUri=.../secrets/appinsights-connection-string)``
and ``AOAI_API_KEY=@Microsoft.KeyVault(SecretUri=.../secrets/aoai-api-key)``; this construct
writes those secrets:

- ``appinsights-connection-string`` (name from :func:`release.azure.names.app_insights_secret`):
  the Application Insights ``connection_string`` attribute;
- one secret per ``secret: {env: VAR}`` key (name from :func:`infra.naming.key_vault_secret`),
  from the same sensitive, ephemeral variable the connection uses.

Each is an ``azapi_resource`` of type ``Microsoft.KeyVault/vaults/secrets`` (the control plane,
through ARM), with the value in the write-only ``sensitive_body``: the value is in neither the
JSON, the plan file nor the state, and writing it needs no network path to the vault's data
plane, so the first ``apply`` works from a Microsoft-hosted agent even for a private vault
(ARM is not subject to the vault firewall: https://github.com/MicrosoftDocs/azure-docs/issues/68668).
The identity running terraform needs ``Microsoft.KeyVault/vaults/secrets/write`` (Contributor or
Key Vault Contributor on the group), not a data-plane role. Rotation: bump the connection's
``key_version`` in config; ``sensitive_body_version`` then re-sends the value.
The writes wait for ``after`` (a ``time_sleep`` after the readers' RBAC grants, so App Service
resolves its references with a grant that has taken effect).
Keys given as ``secret: {key_vault_secret: NAME}`` already live in the vault under ``NAME``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cdktf
from constructs import Construct

from infra import naming
from infra.azapi import AzapiProvider, AzapiResource
from release.azure.names import app_insights_secret
from release.config import EnvironmentConfig

SECRET_TYPE = "Microsoft.KeyVault/vaults/secrets@2023-07-01"  # noqa: S105 (a resource type)


class VaultSecrets(Construct):
    """Exposes ``secrets``: Key Vault secret name -> azapi resource."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cfg: EnvironmentConfig,
        provider: AzapiProvider,
        key_vault_id: str,
        app_insights_connection_string: str,
        app_insights_id: str,
        env_keys: Mapping[str, tuple[cdktf.TerraformVariable, int]],
        after: Sequence[cdktf.ITerraformDependable] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.secrets: dict[str, AzapiResource] = {}
        self._provider = provider
        self._key_vault_id = key_vault_id
        self._tags = dict(tags or {})
        self._after = list(after)
        # re-written when App Insights is replaced (a new resource id = a new connection string)
        self._secret(
            "app_insights",
            app_insights_secret(cfg),
            value=app_insights_connection_string,
            version=app_insights_id,
            content_type="text/plain; application-insights-connection-string",
        )
        for env_var, (variable, key_version) in sorted(env_keys.items()):
            name = naming.key_vault_secret(env_var)
            self._secret(
                name.replace("-", "_"),
                name,
                value=variable.string_value,
                version=str(key_version),
                content_type=f"text/plain; key from ${env_var}",
            )

    def _secret(self, construct_id: str, name: str, *, value: str, version: str, content_type: str) -> None:
        self.secrets[name] = AzapiResource(
            self,
            construct_id,
            provider=self._provider,
            type=SECRET_TYPE,
            name=name,
            parent_id=self._key_vault_id,
            body={"properties": {"contentType": content_type}},
            sensitive_body={"properties": {"value": value}},
            sensitive_body_version={"properties.value": version},
            tags=self._tags,
            depends_on=self._after,
        )
