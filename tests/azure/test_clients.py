"""The client seam: names from the config, ACR token exchange with an Azure identity."""

from __future__ import annotations

import pytest

from release.azure import names
from release.azure.clients import ACR_REFRESH_USER, ACR_SCOPE, AzureCallError, AzureContext
from release.config import EnvironmentConfig, load_config
from release.errors import UserError
from tests.azure.conftest import TENANT
from tests.azure.fake_arm import TOKEN, FakeAzure, StaticCredential


def test_context_from_config(dev_ctx: AzureContext, dev_config: EnvironmentConfig) -> None:
    assert dev_ctx.resource_group == "gaops-dev-rg"
    assert dev_ctx.workspace == "gaops-dev-mlw"
    assert names.registry_login_server(dev_config).endswith(".azurecr.io")


def test_local_environment_has_no_azure_context() -> None:
    with pytest.raises(UserError, match="kind: 'local' has no Azure resources"):
        AzureContext.from_config(load_config("local"), credential=StaticCredential())


def test_acr_refresh_token_from_aad_token(
    dev_ctx: AzureContext, dev_config: EnvironmentConfig, fake: FakeAzure, credential: StaticCredential
) -> None:
    server = names.registry_login_server(dev_config)
    fake.on("POST", r"^/oauth2/exchange$", lambda c: (200, {"refresh_token": "acr-refresh-1"}))
    assert dev_ctx.acr_refresh_token(server) == "acr-refresh-1"
    assert ACR_REFRESH_USER == "00000000-0000-0000-0000-000000000000"
    [call] = fake.find("POST", r"^/oauth2/exchange$")
    assert call.host == server
    assert call.body == {
        "grant_type": "access_token",
        "service": server,
        "tenant": TENANT,
        "access_token": TOKEN,
    }
    assert ACR_SCOPE in credential.scopes


def test_acr_refused_names_the_role(dev_ctx: AzureContext, fake: FakeAzure) -> None:
    fake.on("POST", r"^/oauth2/exchange$", lambda c: (401, {"errors": [{"code": "UNAUTHORIZED"}]}))
    with pytest.raises(AzureCallError, match="AcrPush"):
        dev_ctx.acr_refresh_token("gaopsdevacr.azurecr.io")
