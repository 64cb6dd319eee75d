"""Every azapi body of the synthesized dev and prod stacks against the Azure SDK's generated models
(tests/azure/oracle.py), and proof that the oracle catches what it must: an unknown property,
a wrong type, a wrong enum value, an unknown discriminator, a read-only or missing property."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.azure.oracle import (
    PINNED_API_VERSIONS,
    RESOURCE_MODELS,
    Violation,
    azapi_request_body,
    check,
    check_stack,
)

ML = "Microsoft.MachineLearningServices/workspaces"
ENDPOINT = f"{ML}/onlineEndpoints@2024-04-01"
CONNECTION = f"{ML}/connections@2024-04-01"
COMPUTE = f"{ML}/computes@2024-04-01"
DEPLOYMENT = f"{ML}/onlineEndpoints/deployments@2024-04-01"


def _azapi(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc.get("resource", {}).get("azapi_resource", {})


@pytest.mark.slow
@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_azapi_body_is_accepted_by_the_sdk_models(
    synthesized: dict[str, dict[str, Any]], env: str
) -> None:
    resources = _azapi(synthesized[env])
    assert resources, f"{env}: no azapi_resource synthesized"
    types = {r["type"].split("@")[0] for r in resources.values()}
    assert any(t.endswith("/onlineEndpoints") for t in types)
    for resource in resources.values():
        namespace = resource["type"].split("/", 1)[0].lower()
        assert resource["type"].endswith("@" + PINNED_API_VERSIONS[namespace]), resource["type"]
    problems = {k: [str(v) for v in vs] for k, vs in check_stack(synthesized[env]).items() if vs}
    assert problems == {}


@pytest.mark.slow
def test_a_planted_fault_in_a_synthesized_body_fails(synthesized: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(synthesized["dev"])
    logical, endpoint = next(
        (k, r) for k, r in _azapi(doc).items() if r["type"].split("@")[0].endswith("/onlineEndpoints")
    )
    endpoint["body"]["properties"]["authMode"] = "AadToken"  # case matters for azapi's schema
    assert [str(v) for v in check_stack(doc)[logical]] == [
        "properties.authMode: 'AadToken' is not one of AMLToken|Key|AADToken (EndpointAuthMode)"
    ]


def _endpoint() -> dict[str, Any]:
    return {
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "tags": {"genaiops-auth-policy": "aad-required"},
        "properties": {"authMode": "AADToken", "publicNetworkAccess": "Disabled", "traffic": {"blue": 100}},
    }


def _connection() -> dict[str, Any]:
    return {
        "properties": {
            "category": "AzureOpenAI",
            "authType": "ApiKey",
            "target": "https://x.openai.azure.com/",
            "isSharedToAll": False,
            "metadata": {"ApiType": "azure", "ApiVersion": "2024-02-01"},
            "credentials": {"key": "${var.secret_aoai_api_key}"},
        }
    }


def _compute() -> dict[str, Any]:
    return {
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "computeType": "Kubernetes",
            "resourceId": "/subscriptions/s/resourceGroups/r/providers/Microsoft.ContainerService/managedClusters/a",
            "disableLocalAuth": True,
            "properties": {"namespace": "azureml", "defaultInstanceType": "defaultinstancetype"},
        },
    }


def _deployment() -> dict[str, Any]:
    return {
        "location": "westeurope",
        "sku": {"name": "Default", "capacity": 1},
        "properties": {
            "endpointComputeType": "Managed",
            "instanceType": "Standard_DS3_v2",
            "environmentVariables": {"PROMPTFLOW_RUN_MODE": "serving"},
            "requestSettings": {"requestTimeout": "PT1M"},
            "appInsightsEnabled": True,
        },
    }


@pytest.mark.parametrize(
    ("rtype", "body"),
    [
        (ENDPOINT, _endpoint()),
        (CONNECTION, _connection()),
        (COMPUTE, _compute()),
        (DEPLOYMENT, _deployment()),
    ],
)
def test_valid_bodies_pass(rtype: str, body: dict[str, Any]) -> None:
    assert check(rtype, body) == []


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


def _drop(body: dict[str, Any], path: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    del node[last]
    return body


@pytest.mark.parametrize(
    ("rtype", "body", "path", "message"),
    [
        # unknown properties, at the top, in properties, in a nested model
        (
            ENDPOINT,
            _set(_endpoint(), "properties.authmode", "Key"),
            "properties.authmode",
            "unknown property",
        ),
        (ENDPOINT, _set(_endpoint(), "properties.enforceAccess", "x"), "properties.enforceAccess", "unknown"),
        (
            COMPUTE,
            _set(_compute(), "properties.properties.sslCname", "x"),
            "properties.properties.sslCname",
            "unknown",
        ),
        (DEPLOYMENT, _set(_deployment(), "instanceCount", 2), "instanceCount", "unknown property"),
        # wrong JSON types
        (
            CONNECTION,
            _set(_connection(), "properties.isSharedToAll", "false"),
            "properties.isSharedToAll",
            "expected bool",
        ),
        (
            CONNECTION,
            _set(_connection(), "properties.metadata", ["ApiType"]),
            "properties.metadata",
            "expected an object",
        ),
        (DEPLOYMENT, _set(_deployment(), "sku.capacity", "1"), "sku.capacity", "expected int"),
        (DEPLOYMENT, _set(_deployment(), "sku.capacity", True), "sku.capacity", "got bool"),
        (
            ENDPOINT,
            _set(_endpoint(), "properties.traffic.blue", "100"),
            "properties.traffic.blue",
            "expected int",
        ),
        # enum values
        (
            ENDPOINT,
            _set(_endpoint(), "properties.publicNetworkAccess", "Off"),
            "properties.publicNetworkAccess",
            "not one of",
        ),
        (ENDPOINT, _set(_endpoint(), "identity.type", "System"), "identity.type", "not one of"),
        (
            CONNECTION,
            _set(_connection(), "properties.category", "AzureOpenAi"),
            "properties.category",
            "not one of",
        ),
        # discriminators
        (
            CONNECTION,
            _set(_connection(), "properties.authType", "Token"),
            "properties.authType",
            "not one of",
        ),
        (
            COMPUTE,
            _set(_compute(), "properties.computeType", "AKSv2"),
            "properties.computeType",
            "not one of",
        ),
        (
            DEPLOYMENT,
            _drop(_deployment(), "properties.endpointComputeType"),
            "properties.endpointComputeType",
            "missing",
        ),
        # only in a later api-version than 2024-04-01 (bicep-types-az cross-check)
        (
            CONNECTION,
            _set(_connection(), "properties.useWorkspaceManagedIdentity", True),
            "properties.useWorkspaceManagedIdentity",
            "after api-version 2024-04-01",
        ),
        (
            CONNECTION,
            _set(_connection(), "properties.category", "Pinecone"),
            "properties.category",
            "not one of",
        ),
        (
            DEPLOYMENT,
            _set(_deployment(), "properties.startupProbe", {}),
            "properties.startupProbe",
            "after api-version",
        ),
        # read-only and required
        (
            ENDPOINT,
            _set(_endpoint(), "properties.scoringUri", "https://x"),
            "properties.scoringUri",
            "read-only",
        ),
        (ENDPOINT, _drop(_endpoint(), "properties.authMode"), "properties.authMode", "required"),
        (ENDPOINT, _drop(_endpoint(), "location"), "location", "required"),
        (CONNECTION, _drop(_connection(), "properties.authType"), "properties.authType", "missing"),
    ],
)
def test_planted_faults_are_caught(rtype: str, body: dict[str, Any], path: str, message: str) -> None:
    problems = check(rtype, body)
    assert [v.path for v in problems] == [path], problems
    assert message in problems[0].message


def test_sdk_style_lower_case_enum_is_accepted_only_when_asked() -> None:
    body = _set(_endpoint(), "properties.publicNetworkAccess", "disabled")  # what azure-ai-ml sends
    assert check(ENDPOINT, body, case_sensitive_enums=False) == []
    assert [v.path for v in check(ENDPOINT, body)] == ["properties.publicNetworkAccess"]


def test_azapi_arguments_become_the_request_body() -> None:
    resource = {
        "type": ENDPOINT,
        "body": {"properties": {"authMode": "Key"}},
        "location": "westeurope",
        "identity": [{"type": "SystemAssigned"}],
        "tags": {"a": "b"},
        "sensitive_body": {"properties": {"keys": {"primaryKey": "${var.k}"}}},
    }
    assert azapi_request_body(resource) == {
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "tags": {"a": "b"},
        "properties": {"authMode": "Key", "keys": {"primaryKey": "${var.k}"}},
    }
    # keys is EndpointAuthKeys: primaryKey is known, a typo is not
    resource["sensitive_body"] = {"properties": {"keys": {"primary": "${var.k}"}}}
    assert [str(v) for v in check_stack({"resource": {"azapi_resource": {"ep": resource}}})["ep"]] == [
        "properties.keys.primary: unknown property of EndpointAuthKeys"
    ]


def test_an_unregistered_azapi_type_is_a_violation_not_a_pass() -> None:
    doc = {"resource": {"azapi_resource": {"x": {"type": "Microsoft.Foo/bars@2024-01-01", "body": {}}}}}
    assert check_stack(doc)["x"] == [
        Violation("type", "\"no SDK model registered for 'Microsoft.Foo/bars@2024-01-01'\"")
    ]
    assert f"{ML}/onlineEndpoints".lower() in RESOURCE_MODELS
