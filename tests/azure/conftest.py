"""Fixtures for the Azure tests: the dev/prod config, a fake ARM at the HTTP boundary, a context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from release.azure.clients import AzureContext
from release.config import EnvironmentConfig, load_config
from tests.azure.fake_arm import FakeAzure, StaticCredential

SUB = "3f2c1a9e-0b1d-4c55-9a77-1e2d3c4b5a69"
TENANT = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ENVIRON = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_TENANT_ID": TENANT,
    "AZURE_LOCATION": "westeurope",
}
RG = "gaops-dev-rg"
WS_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/gaops-dev-mlw"

PROD_WS_PATH = WS_PATH.replace("gaops-dev-", "gaops-prod-")
APPI_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Insights/components/gaops-dev-appi"
# the shape of GET Microsoft.Insights/components (2020-02-02): properties.ConnectionString
APPI_CONNECTION_STRING = (
    "InstrumentationKey=4d3c2b1a-0f9e-4d8c-b7a6-958473625140;"
    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
    "LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"
)


@pytest.fixture(scope="session")
def dev_config() -> EnvironmentConfig:
    return load_config("dev", environ=ENVIRON)


@pytest.fixture(scope="session")
def prod_config() -> EnvironmentConfig:
    return load_config("prod", environ={**ENVIRON, "AZURE_SUBSCRIPTION_ID": SUB})


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """dev and prod cdk.tf.json, synthesized once per session in one process (CDKTF import ~10 s)."""
    from infra.app import synth

    out = tmp_path_factory.mktemp("cdktf.out")
    configs = [load_config(env, environ=ENVIRON) for env in ("dev", "prod")]
    paths = synth(configs, out)
    return {env: json.loads(Path(p).read_text()) for env, p in paths.items()}


@pytest.fixture
def fake() -> FakeAzure:
    fake = FakeAzure()
    for ws in (WS_PATH, PROD_WS_PATH):
        fake.put_resource(
            ws,
            {
                "location": "westeurope",
                "properties": {
                    "discoveryUrl": "https://westeurope.api.azureml.ms/discovery",
                    "mlFlowTrackingUri": f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{ws}",
                },
            },
        )
    for appi in (APPI_PATH, APPI_PATH.replace("gaops-dev-", "gaops-prod-")):
        fake.put_resource(
            appi,
            {
                "location": "westeurope",
                "kind": "web",
                "properties": {
                    "ApplicationId": appi.rsplit("/", 1)[-1],
                    "ConnectionString": APPI_CONNECTION_STRING,
                    "DisableLocalAuth": True,
                    "provisioningState": "Succeeded",
                },
            },
        )
    return fake


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
def dev_ctx(dev_config: EnvironmentConfig, fake: FakeAzure, credential: StaticCredential) -> AzureContext:
    return AzureContext.from_config(dev_config, credential=credential, transport=fake.transport())


@pytest.fixture
def prod_ctx(prod_config: EnvironmentConfig, fake: FakeAzure, credential: StaticCredential) -> AzureContext:
    return AzureContext.from_config(prod_config, credential=credential, transport=fake.transport())
