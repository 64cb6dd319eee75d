"""The one place that writes ``time_sleep`` (hashicorp/time has no prebuilt cdktf binding).

Like :mod:`infra.azapi`: a hand-written :class:`cdktf.TerraformProvider` for ``hashicorp/time``
and a :class:`cdktf.TerraformResource` whose arguments are written with ``add_override``.

Why: Azure RBAC assignments take effect up to several minutes after ARM returns
(https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected);
a data-plane call made right after the grant fails with 403 (the Key Vault case:
https://github.com/Azure/terraform-azurerm-avm-res-keyvault-vault/issues/78, fixed there with a
``time_sleep``). A ``time_sleep`` that depends on the grants delays whatever depends on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cdktf
from constructs import Construct

TIME_SOURCE = "hashicorp/time"
TIME_VERSION = "~> 0.12"
_DURATION = re.compile(r"^\d+(s|m|h)$")


def _metadata() -> cdktf.TerraformProviderGeneratorMetadata:
    return cdktf.TerraformProviderGeneratorMetadata(
        provider_name="time", provider_version_constraint=TIME_VERSION
    )


class TimeProvider(cdktf.TerraformProvider):
    """``provider "time" {}`` (no settings)."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type="time",
            terraform_generator_metadata=_metadata(),
            terraform_provider_source=TIME_SOURCE,
        )


class TimeSleep(cdktf.TerraformResource):
    """``resource "time_sleep"``: waits ``create_duration`` (e.g. ``"120s"``) after everything in
    ``after`` exists; resources that depend on it start only then. ``triggers`` (name -> value)
    make a changed value wait again (e.g. a new principal id)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: TimeProvider,
        create_duration: str,
        after: Sequence[cdktf.ITerraformDependable] = (),
        triggers: dict[str, str] | None = None,
    ) -> None:
        if not _DURATION.match(create_duration):
            raise ValueError(f"create_duration {create_duration!r} must look like 120s, 2m or 1h")
        super().__init__(
            scope,
            id,
            terraform_resource_type="time_sleep",
            terraform_generator_metadata=_metadata(),
            provider=provider,
            depends_on=list(after) or None,
        )
        self.add_override("create_duration", create_duration)
        if triggers:
            self.add_override("triggers", dict(triggers))
