"""The one place that knows how to write ``azapi_resource`` (no prebuilt cdktf binding exists).

An azapi resource is a plain :class:`cdktf.TerraformResource` whose arguments are written with
``add_override``; the provider is a hand-written :class:`cdktf.TerraformProvider` for
``Azure/azapi``. Bodies are Python dicts in the REST shape of the resource type's api-version.
Write-only values (keys) go to ``sensitive_body``, which azapi sends but never stores in state.
Each write-only value also gets a ``sensitive_body_version`` entry (JSON path -> version string):
azapi re-sends the value only when that version changes (key rotation: bump the version), and
with a version set it keeps no hash of the value in private state (azapi >= 2.5,
https://registry.terraform.io/providers/Azure/azapi/latest/docs/resources/resource#sensitive_body_version).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cdktf
from constructs import Construct

AZAPI_SOURCE = "Azure/azapi"
AZAPI_VERSION = "~> 2.5"  # sensitive_body is write-only (accepts ephemeral values)


def _metadata() -> cdktf.TerraformProviderGeneratorMetadata:
    return cdktf.TerraformProviderGeneratorMetadata(
        provider_name="azapi", provider_version_constraint=AZAPI_VERSION
    )


class AzapiProvider(cdktf.TerraformProvider):
    """``provider "azapi" {}``: authenticates like azurerm (ARM_* variables, az login, OIDC)."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type="azapi",
            terraform_generator_metadata=_metadata(),
            terraform_provider_source=AZAPI_SOURCE,
        )


class AzapiResource(cdktf.TerraformResource):
    """``resource "azapi_resource"``: one ARM resource of ``type@api-version`` under ``parent_id``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: AzapiProvider,
        type: str,
        name: str,
        parent_id: str,
        body: Mapping[str, Any],
        location: str | None = None,
        identity: str | None = None,
        sensitive_body: Mapping[str, Any] | None = None,
        sensitive_body_version: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        depends_on: Sequence[cdktf.ITerraformDependable] | None = None,
    ) -> None:
        if "@" not in type:
            raise ValueError(f"azapi type {type!r} needs an api-version: <type>@<yyyy-mm-dd>")
        super().__init__(
            scope,
            id,
            terraform_resource_type="azapi_resource",
            terraform_generator_metadata=_metadata(),
            provider=provider,
            depends_on=list(depends_on) if depends_on else None,
        )
        self.resource_type = type
        self.body = dict(body)
        self.add_override("type", type)
        self.add_override("name", name)
        self.add_override("parent_id", parent_id)
        self.add_override("body", self.body)
        if location is not None:
            self.add_override("location", location)
        if identity is not None:
            self.add_override("identity", [{"type": identity}])
        if sensitive_body:
            if not sensitive_body_version:
                raise ValueError(f"{id}: sensitive_body needs sensitive_body_version (path -> version)")
            self.add_override("sensitive_body", dict(sensitive_body))
            self.add_override("sensitive_body_version", dict(sensitive_body_version))
        if tags:
            self.add_override("tags", dict(tags))
        # keep the diff to the properties we declare; the release tooling owns e.g. traffic
        self.add_override("ignore_missing_property", True)

    @property
    def resource_id(self) -> str:
        return self.get_string_attribute("id")

    @property
    def principal_id(self) -> str:
        """The system-assigned identity's object id (only when created with ``identity``)."""
        return cdktf.Token.as_string(self.interpolation_for_attribute("identity[0].principal_id"))
