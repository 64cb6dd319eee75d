"""Key Vault secrets that App Service reads through Key Vault references.

``release/targets/appservice.py`` sets app settings such as
``APPLICATIONINSIGHTS_CONNECTION_STRING=@Microsoft.KeyVault(SecretUri=.../secrets/appinsights-connection-string)``
and ``AOAI_API_KEY=@Microsoft.KeyVault(SecretUri=.../secrets/aoai-api-key)``; this construct
writes those secrets:

- ``appinsights-connection-string`` (name from :func:`release.azure.names.app_insights_secret`):
  the Application Insights ``connection_string`` attribute, a reference expression in the JSON;
- one secret per ``secret: {env: VAR}`` key (name from :func:`infra.naming.key_vault_secret`),
  written from the same sensitive, ephemeral variable the connections use, through the
  write-only ``value_wo`` (Terraform >= 1.11): the key is in neither the JSON, the plan file
  nor the state. Write-only values are not diffed: to rotate, set ``TF_VAR_secrets_version``
  to a higher number for that plan.
Keys given as ``secret: {key_vault_secret: NAME}`` already live in the vault under ``NAME``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cdktf
from cdktf_cdktf_provider_azurerm.key_vault_secret import KeyVaultSecret
from constructs import Construct

from infra import naming
from release.azure.names import app_insights_secret
from release.config import EnvironmentConfig

VERSION_VARIABLE = "secrets_version"


class VaultSecrets(Construct):
    """Exposes ``secrets``: Key Vault secret name -> resource."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        cfg: EnvironmentConfig,
        key_vault_id: str,
        app_insights_connection_string: str,
        env_keys: Mapping[str, cdktf.TerraformVariable],
        after: Sequence[cdktf.ITerraformDependable] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.secrets: dict[str, KeyVaultSecret] = {}
        self._key_vault_id = key_vault_id
        self._tags = dict(tags or {})
        self._after = list(after)
        name = app_insights_secret(cfg)
        self._secret(
            "app_insights",
            name,
            value=app_insights_connection_string,
            content_type="text/plain; application-insights-connection-string",
        )
        if not env_keys:
            return
        version = cdktf.TerraformVariable(
            self,
            VERSION_VARIABLE,
            type="number",
            default=1,
            nullable=False,
            description="bump to re-write the write-only connection key secrets (key rotation)",
        )
        version.override_logical_id(VERSION_VARIABLE)
        for env_var, variable in sorted(env_keys.items()):
            name = naming.key_vault_secret(env_var)
            self._secret(
                name.replace("-", "_"),
                name,
                value_wo=variable.string_value,
                value_wo_version=version.number_value,
                content_type=f"text/plain; key from ${env_var}",
            )

    def _secret(
        self,
        construct_id: str,
        name: str,
        *,
        content_type: str,
        value: str | None = None,
        value_wo: str | None = None,
        value_wo_version: float | None = None,
    ) -> None:
        self.secrets[name] = KeyVaultSecret(
            self,
            construct_id,
            name=name,
            key_vault_id=self._key_vault_id,
            value=value,
            value_wo=value_wo,
            value_wo_version=value_wo_version,
            content_type=content_type,
            tags=self._tags,
            depends_on=self._after,
        )
