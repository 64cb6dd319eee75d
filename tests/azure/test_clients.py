"""The client seam: names from the config, a clear error for the local environment."""

from __future__ import annotations

import pytest

from release.azure import names
from release.azure.clients import AzureContext
from release.config import EnvironmentConfig, load_config
from release.errors import UserError
from tests.azure.fake_arm import StaticCredential


def test_context_from_config(dev_ctx: AzureContext, dev_config: EnvironmentConfig) -> None:
    assert dev_ctx.resource_group == "gaops-dev-rg"
    assert dev_ctx.workspace == "gaops-dev-mlw"
    assert names.registry_login_server(dev_config).endswith(".azurecr.io")


def test_local_environment_has_no_azure_context() -> None:
    with pytest.raises(UserError, match="kind: 'local' has no Azure resources"):
        AzureContext.from_config(load_config("local"), credential=StaticCredential())
