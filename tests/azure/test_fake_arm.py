"""The fake ARM behaves like ARM where our code depends on it: long-running operations that can
fail, 409 RoleAssignmentExists, 403 from network rules, 400 for bodies the service refuses.
Each test drives it through the official SDKs (or azure-core's pipeline), as production does."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest

from release.azure.clients import AzureContext
from release.config import EnvironmentConfig
from release.errors import UserError
from release.targets.base import DeploymentSpec
from release.targets.managed import ManagedTarget
from tests.azure.conftest import SUB, WS_PATH
from tests.azure.fake_arm import FakeAzure, Topology

DIGEST = "gaopsdevacr.azurecr.io/flows/web_classification@sha256:" + "ab" * 32
ENDPOINT = "gaops-dev-web-classification"
EP_PATH = f"{WS_PATH}/onlineEndpoints/{ENDPOINT}"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # Reader (built-in role definition id)
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def spec(name: str) -> DeploymentSpec:
    return DeploymentSpec(flow="web_classification", name=name, image=DIGEST, env={"GENAIOPS_RELEASE": name})


@pytest.fixture
def managed(dev_config: EnvironmentConfig, dev_ctx: AzureContext) -> ManagedTarget:
    return ManagedTarget(dev_config, "web_classification", dev_ctx)


def test_deployment_put_is_a_long_running_operation(managed: ManagedTarget, fake: FakeAzure) -> None:
    fake.lro_polls = 2
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)

    [put] = fake.find("PUT", "/deployments/blue-0001$")
    assert put.status == 201  # created, still provisioning
    polls = [c for c in fake.calls[fake.calls.index(put) :] if "/operationStatuses/" in c.path]
    assert len(polls) >= 3  # InProgress, InProgress, Succeeded: the SDK followed Azure-AsyncOperation
    stored = fake.store[f"{EP_PATH}/deployments/blue-0001".lower()]
    assert stored["properties"]["provisioningState"] == "Succeeded"
    assert stored["type"] == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments"
    assert set(stored["systemData"]) >= {"createdAt", "createdBy", "lastModifiedAt"}


def test_response_shape_follows_the_rest_example(managed: ManagedTarget, fake: FakeAzure) -> None:
    """Top-level members and the 201 state of azure-rest-api-specs
    specification/machinelearningservices/.../stable/2024-04-01/examples/OnlineDeployment/
    ManagedOnlineDeployment/createOrUpdate.json (responses.201.body)."""
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)
    [put] = fake.find("PUT", "/deployments/blue-0001$")
    body = put.response
    assert {"id", "name", "type", "properties", "systemData", "location", "sku", "tags"} <= set(body)
    assert body["properties"]["provisioningState"] == "Creating"
    assert body["id"] == put.path and body["name"] == "blue-0001"
    assert set(body["systemData"]) == {
        "createdAt",
        "createdBy",
        "createdByType",
        "lastModifiedAt",
        "lastModifiedBy",
        "lastModifiedByType",
    }
    [endpoint, *_] = fake.find("PUT", f"/onlineEndpoints/{ENDPOINT}$")
    assert {"principalId", "tenantId", "type"} <= set(endpoint.response["identity"])


def test_a_failed_deployment_leaves_traffic_untouched(managed: ManagedTarget, fake: FakeAzure) -> None:
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)
    managed.set_traffic({"blue-0001": 100})
    endpoint_puts = len(fake.find("PUT", f"/onlineEndpoints/{ENDPOINT}$"))

    fake.fail_provisioning(
        "/deployments/green-0002$",
        code="ResourceNotReady",
        message="User container has crashed or terminated: Liveness probe failed",
    )
    with pytest.raises(UserError, match=r"green-0002.*(ResourceNotReady|Liveness probe failed)"):
        managed.create_or_update(spec("green-0002"), timeout_s=30)

    # ARM reports the failure on the resource, and the release never touched the endpoint
    green = fake.store[f"{EP_PATH}/deployments/green-0002".lower()]
    assert green["properties"]["provisioningState"] == "Failed"
    assert len(fake.find("PUT", f"/onlineEndpoints/{ENDPOINT}$")) == endpoint_puts
    assert managed.get_traffic() == {"blue-0001": 100}
    listed = {d.name: d for d in managed.list_deployments()}
    assert listed["blue-0001"].traffic == 100 and listed["green-0002"].traffic == 0


def test_delete_is_202_then_polled_until_gone(managed: ManagedTarget, fake: FakeAzure) -> None:
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)
    managed.delete("blue-0001")
    [delete] = fake.find("DELETE", "/deployments/blue-0001$")
    assert delete.status == 202
    assert f"{EP_PATH}/deployments/blue-0001".lower() not in fake.store
    assert any("/operationStatuses/" in c.path for c in fake.calls[fake.calls.index(delete) :])


def test_role_assignment_duplicate_is_409_role_assignment_exists(
    dev_ctx: AzureContext, fake: FakeAzure
) -> None:
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    client = AuthorizationManagementClient(dev_ctx.credential, SUB, **dev_ctx.sdk_kwargs())
    scope = WS_PATH
    principal = "44444444-4444-4444-4444-444444444444"

    def assign(name: str, role: str) -> Any:
        params = RoleAssignmentCreateParameters(
            role_definition_id=f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            principal_id=principal,
            principal_type="ServicePrincipal",
        )
        return client.role_assignments.create(scope, name, params)

    first = assign("0b7c3d3e-0000-4000-8000-000000000001", READER)
    assert first.scope == scope
    assign("0b7c3d3e-0000-4000-8000-000000000001", READER)  # same name again: an idempotent update
    assign("0b7c3d3e-0000-4000-8000-000000000002", ACR_PULL)  # another role: fine
    with pytest.raises(HttpResponseError) as exc:
        assign("0b7c3d3e-0000-4000-8000-000000000003", READER)  # same principal+role+scope, new name
    assert exc.value.status_code == 409
    assert exc.value.error is not None and exc.value.error.code == "RoleAssignmentExists"

    listed = list(client.role_assignments.list_for_scope(scope, filter=f"assignedTo('{principal}')"))
    assert sorted(a.role_definition_id.rsplit("/", 1)[-1] for a in listed) == sorted([READER, ACR_PULL])


STACK = {
    "resource": {
        "azurerm_container_registry": {
            "acr": {"name": "gaopsdevacr", "public_network_access_enabled": False}
        },
        "azurerm_key_vault": {"kv": {"name": "gaops-dev-kv", "public_network_access_enabled": True}},
        "azurerm_storage_account": {"st": {"name": "gaopsdevst", "public_network_access_enabled": False}},
        "azapi_resource": {
            "ep": {
                "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-04-01",
                "name": "gaops-dev-web-classification",
                "body": {"properties": {"authMode": "AADToken", "publicNetworkAccess": "Disabled"}},
            }
        },
    }
}


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://gaopsdevacr.azurecr.io/v2/", "DENIED"),
        ("https://gaopsdevst.blob.core.windows.net/?comp=list", "AuthorizationFailure"),
        ("https://gaops-dev-web-classification.westeurope.inference.ml.azure.com/score", "Forbidden"),
    ],
)
def test_private_hosts_refuse_a_caller_outside_the_network(
    dev_ctx: AzureContext, fake: FakeAzure, url: str, code: str
) -> None:
    fake.topology = Topology.from_stack(STACK)
    response = dev_ctx.http(HttpRequest("GET", url))
    assert response.status_code == 403
    assert code in response.text()
    # the same request from a self-hosted agent inside the VNet gets through the network rule
    fake.topology = Topology.from_stack(STACK, caller_in_vnet=True)
    assert dev_ctx.http(HttpRequest("GET", url)).status_code != 403


def test_public_host_is_not_refused(dev_ctx: AzureContext, fake: FakeAzure) -> None:
    fake.topology = Topology.from_stack(STACK)
    assert "gaops-dev-kv.vault.azure.net" not in fake.topology.private_hosts
    assert fake.topology.refuses("gaops-dev-kv.vault.azure.net") is None


@pytest.mark.slow
def test_topology_follows_the_synthesized_stacks(synthesized: dict[str, dict[str, Any]]) -> None:
    for env in ("dev", "prod"):
        doc = synthesized[env]
        topology = Topology.from_stack(doc)
        for rtype, suffix in (
            ("azurerm_container_registry", ".azurecr.io"),
            ("azurerm_key_vault", ".vault.azure.net"),
            ("azurerm_storage_account", ".blob.core.windows.net"),
        ):
            for res in doc["resource"].get(rtype, {}).values():
                private = res.get("public_network_access_enabled") is False
                assert (f"{res['name']}{suffix}" in topology.private_hosts) is private, (env, rtype)


def test_an_ml_body_the_service_does_not_know_is_a_400(dev_ctx: AzureContext, fake: FakeAzure) -> None:
    url = f"https://management.azure.com{EP_PATH}?api-version=2024-04-01"
    bad = {"location": "westeurope", "properties": {"authMode": "AADToken", "trafic": {}}}
    response = dev_ctx.http(HttpRequest("PUT", url, json=bad))
    assert response.status_code == 400
    assert "properties.trafic: unknown property" in response.text()
    assert EP_PATH.lower() not in fake.store
