"""Managed and Kubernetes online endpoint targets, checked at the HTTP boundary.

azure-ai-ml sends real requests through azure-core; the fake ARM answers like the REST API.
We assert method, path, api-version and the JSON body fields named in the REST reference
(Microsoft.MachineLearningServices/workspaces/onlineEndpoints[/deployments]).
"""

from __future__ import annotations

import logging
import threading

import pytest

from release.azure.clients import AzureContext
from release.config import EnvironmentConfig
from release.errors import CheckFailed, UserError
from release.targets.base import DeploymentSpec, TrafficError
from release.targets.kubernetes import KubernetesTarget
from release.targets.managed import ManagedTarget
from tests.azure.conftest import RG, SUB, WS_PATH
from tests.azure.fake_arm import TOKEN, Call, FakeAzure

DIGEST = "gaopsdevacr.azurecr.io/flows/web_classification@sha256:" + "ab" * 32
ENDPOINT = "gaops-dev-web-classification"
EP_PATH = f"{WS_PATH}/onlineEndpoints/{ENDPOINT}"
# api-versions azure-ai-ml 1.35.2 uses for these calls (the body shapes match 2024-04-01)
ENDPOINT_API = "2022-02-01-preview"
DEPLOYMENT_API = "2023-04-01-preview"
CANARY = "canary-secret-6f1d2b7a-do-not-leak"


def spec(name: str, flow: str = "web_classification", **kw: object) -> DeploymentSpec:
    return DeploymentSpec(
        flow=flow,
        name=name,
        image=DIGEST,
        env={"GENAIOPS_RELEASE": name},
        secret_env={"AOAI_API_KEY": "AOAI_API_KEY"},  # the env var of connection aoai in config
        labels={"git_sha": "0123abc"},
        **kw,  # type: ignore[arg-type]
    )


def puts(fake: FakeAzure, suffix: str) -> list[Call]:
    return fake.find("PUT", suffix + "$")


@pytest.fixture
def managed(dev_config: EnvironmentConfig, dev_ctx: AzureContext) -> ManagedTarget:
    return ManagedTarget(dev_config, "web_classification", dev_ctx)


def test_release_sends_endpoint_deployment_then_traffic(
    managed: ManagedTarget, fake: FakeAzure, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs log requests at DEBUG
    monkeypatch.setenv("AOAI_API_KEY", CANARY)
    managed.ensure_endpoint()
    info = managed.create_or_update(spec("r20261124-0300-aa"), timeout_s=30)
    managed.set_traffic({"r20261124-0300-aa": 100})

    assert info.state == "Succeeded" and info.traffic == 0
    # endpoint: PUT with identity, auth mode, no public access, empty traffic
    [create, traffic_put] = puts(fake, f"/onlineEndpoints/{ENDPOINT}")
    assert create.path == EP_PATH
    assert create.api_version == ENDPOINT_API
    assert create.headers["Authorization"] == f"Bearer {TOKEN}"
    assert create.body["identity"] == {"type": "SystemAssigned"}
    assert create.body["location"] == "westeurope"
    props = create.body["properties"]
    assert props["authMode"] == "AADToken"
    assert props["publicNetworkAccess"] == "enabled"  # dev: network profile public
    assert props["traffic"] == {}
    # the identity may read workspace connections: secrets are injected, never sent
    assert props["properties"] == {"enforce_access_to_default_secret_stores": "enabled"}

    # the flow image is registered as an environment pinned by digest, with the serving routes
    [env_put] = fake.find("PUT", r"/environments/[^/]+/versions/[^/]+$")
    assert env_put.body["properties"]["image"] == DIGEST
    assert env_put.body["properties"]["inferenceConfig"] == {
        "livenessRoute": {"path": "/health", "port": 8080},
        "readinessRoute": {"path": "/health", "port": 8080},
        "scoringRoute": {"path": "/score", "port": 8080},
    }

    [dep] = puts(fake, f"/onlineEndpoints/{ENDPOINT}/deployments/r20261124-0300-aa")
    assert dep.api_version == DEPLOYMENT_API
    assert dep.body["sku"]["capacity"] == 1
    d = dep.body["properties"]
    assert d["endpointComputeType"] == "Managed"
    assert d["instanceType"] == "Standard_DS3_v2"
    assert d["environmentId"] == env_put.path
    assert d["appInsightsEnabled"] is True
    assert "egressPublicNetworkAccess" not in d  # egress is governed by the managed network
    env = d["environmentVariables"]
    assert env["PROMPTFLOW_RUN_MODE"] == "serving"
    assert env["PRT_CONFIG_OVERRIDE"] == (
        f"deployment.subscription_id={SUB},deployment.resource_group={RG},"
        f"deployment.workspace_name=gaops-dev-mlw,deployment.endpoint_name={ENDPOINT},"
        "deployment.deployment_name=r20261124-0300-aa"
    )
    assert env["AOAI_API_KEY"] == "${{azureml://connections/aoai/credentials/key}}"
    assert env["GENAIOPS_RELEASE"] == "r20261124-0300-aa"
    collections = d["dataCollector"]["collections"]
    assert collections["model_inputs"]["dataCollectionMode"] == "enabled"
    assert collections["model_outputs"]["dataCollectionMode"] == "enabled"
    assert d["requestSettings"]["requestTimeout"] == "PT1M"
    assert dep.body["tags"]["genaiops.image"] == DIGEST

    # traffic: a PUT of the endpoint naming the new deployment, only after it exists
    assert traffic_put.body["properties"]["traffic"] == {"r20261124-0300-aa": 100}
    order = [c.path for c in fake.writes()]
    assert order.index(create.path) < order.index(dep.path) < len(order) - 1
    assert fake.calls.index(traffic_put) > fake.calls.index(dep)
    assert managed.get_traffic() == {"r20261124-0300-aa": 100}
    assert CANARY not in fake.all_text()
    assert "deploying" in caplog.text and CANARY not in caplog.text


def test_blue_green_switch_names_both_deployments(managed: ManagedTarget, fake: FakeAzure) -> None:
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)
    managed.set_traffic({"blue-0001": 100})
    managed.create_or_update(spec("green-0002"), timeout_s=30)
    assert managed.get_traffic() == {"blue-0001": 100}  # a new deployment starts at 0 %
    managed.set_traffic({"green-0002": 100})

    last = puts(fake, f"/onlineEndpoints/{ENDPOINT}")[-1]
    # the PUT replaces the whole map: blue, not named, gets 0 %
    assert last.body["properties"]["traffic"] == {"green-0002": 100}
    listed = {d.name: d for d in managed.list_deployments()}
    assert listed["green-0002"].traffic == 100 and listed["blue-0001"].traffic == 0
    assert listed["green-0002"].image == DIGEST
    assert listed["green-0002"].labels == {"git_sha": "0123abc"}

    with pytest.raises(UserError, match="still receives traffic"):
        managed.delete("green-0002")
    managed.delete("blue-0001")
    [delete] = fake.find("DELETE", "/deployments/blue-0001$")
    assert delete.path == f"{EP_PATH}/deployments/blue-0001"


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"ghost-1": 100}, "unknown deployment"),
        ({"blue-0001": 90}, "sum to 100"),
        ({"blue-0001": 110, "green-0002": -10}, "between 0 and 100"),
    ],
)
def test_bad_traffic_map_touches_nothing(
    managed: ManagedTarget, fake: FakeAzure, traffic: dict[str, int], message: str
) -> None:
    managed.ensure_endpoint()
    managed.create_or_update(spec("blue-0001"), timeout_s=30)
    managed.create_or_update(spec("green-0002"), timeout_s=30)
    before = len(fake.writes())
    with pytest.raises(TrafficError, match=message):
        managed.set_traffic(traffic)
    assert len(fake.writes()) == before


@pytest.mark.parametrize(
    ("name", "image", "message"),
    [
        ("x", DIGEST, "not valid for Azure ML"),
        ("release_with_underscore", DIGEST, "not valid for Azure ML"),
        ("good-name", "gaopsdevacr.azurecr.io/flows/wc:latest", "not pinned by digest"),
    ],
)
def test_bad_spec_is_refused_before_any_request(
    managed: ManagedTarget, fake: FakeAzure, name: str, image: str, message: str
) -> None:
    bad = DeploymentSpec(flow="web_classification", name=name, image=image)
    with pytest.raises(UserError, match=message):
        managed.create_or_update(bad, timeout_s=30)
    assert fake.writes() == []


def test_secret_without_connection_is_refused_before_any_request(
    managed: ManagedTarget, fake: FakeAzure
) -> None:
    bad = DeploymentSpec(
        flow="web_classification", name="good-name", image=DIGEST, secret_env={"OTHER_KEY": "OTHER_KEY"}
    )
    with pytest.raises(UserError, match=r"OTHER_KEY.*not the secret of a connection"):
        managed.create_or_update(bad, timeout_s=30)
    assert fake.writes() == []


def test_provisioning_is_bounded_and_failure_is_reported(managed: ManagedTarget, fake: FakeAzure) -> None:
    managed.ensure_endpoint()
    state = {"value": "Creating"}
    done = threading.Event()

    def deployment_state(call: Call) -> tuple[int, object] | None:
        key = call.path.lower()
        if call.method == "PUT":
            body = fake.put_resource(call.path, call.body)
        else:
            body = fake.store.get(key)
            if body is None:
                return None
        body["properties"]["provisioningState"] = state["value"]
        if state["value"] != "Creating":
            done.set()
        return (201 if call.method == "PUT" else 200), body

    fake.on("PUT", r"/deployments/slow-0001$", deployment_state)
    fake.on("GET", r"/deployments/slow-0001$", deployment_state)
    with pytest.raises(CheckFailed, match="not finished after 1 s"):
        managed.create_or_update(spec("slow-0001"), timeout_s=1)
    polls = len(fake.find("GET", r"/deployments/slow-0001$"))
    assert polls >= 1  # the LRO was polled, not assumed

    state["value"] = "Failed"  # the abandoned poller thread sees a terminal state and stops
    assert done.wait(10)
    with pytest.raises(UserError, match="slow-0001"):
        managed.create_or_update(spec("slow-0001"), timeout_s=30)


def test_auth_headers_route_to_one_deployment(managed: ManagedTarget, credential: object) -> None:
    managed.ensure_endpoint()
    assert managed.scoring_url() == f"https://{ENDPOINT}.westeurope.inference.ml.azure.com/score"
    headers = managed.auth_headers("green-0002")
    assert headers == {"azureml-model-deployment": "green-0002", "Authorization": f"Bearer {TOKEN}"}
    assert "https://ml.azure.com/.default" in credential.scopes  # type: ignore[attr-defined]


def test_kubernetes_endpoint_on_attached_compute(
    prod_config: EnvironmentConfig, prod_ctx: AzureContext, fake: FakeAzure
) -> None:
    target = KubernetesTarget(prod_config, "support_triage", prod_ctx)
    target.ensure_endpoint()
    target.create_or_update(spec("r1-triage", flow="support_triage"), timeout_s=30)
    target.set_traffic({"r1-triage": 100})

    ws = WS_PATH.replace("gaops-dev-mlw", "gaops-prod-mlw").replace("gaops-dev-rg", "gaops-prod-rg")
    [create, traffic] = fake.find("PUT", "/onlineEndpoints/gaops-prod-support-triage$")
    assert create.path == f"{ws}/onlineEndpoints/gaops-prod-support-triage"
    assert create.body["properties"]["compute"] == f"{ws}/computes/aks"  # the attached AKS compute
    assert create.body["properties"]["authMode"] == "AMLToken"  # Kubernetes: no Entra ID tokens
    assert create.body["identity"] == {"type": "SystemAssigned"}
    [dep] = fake.find("PUT", "/deployments/r1-triage$")
    assert dep.body["sku"]["capacity"] == 2  # prod config: instance_count 2
    props = dep.body["properties"]
    assert props["endpointComputeType"] == "Kubernetes"
    assert props["instanceType"] == "defaultinstancetype"
    assert props["appInsightsEnabled"] is True
    assert "dataCollector" not in props
    assert props["environmentVariables"]["PROMPTFLOW_RUN_MODE"] == "serving"
    assert traffic.body["properties"]["traffic"] == {"r1-triage": 100}


def test_key_auth_reads_keys_at_call_time(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, fake: FakeAzure
) -> None:
    cfg = dev_config.model_copy(
        update={
            "flows": {
                **dev_config.flows,
                "web_classification": dev_config.flows["web_classification"].model_copy(
                    update={
                        "deployment": dev_config.flows["web_classification"].deployment.model_copy(
                            update={"auth_mode": "key"}
                        )
                    }
                ),
            }
        }
    )
    fake.on(
        "POST",
        r"/onlineEndpoints/[^/]+/listKeys$",
        lambda c: (200, {"primaryKey": "k1", "secondaryKey": "k2"}),
    )
    target = ManagedTarget(cfg, "web_classification", dev_ctx)
    target.ensure_endpoint()
    [create] = fake.find("PUT", "/onlineEndpoints/gaops-dev-web-classification$")
    assert create.body["properties"]["authMode"] == "Key"
    assert target.auth_headers() == {"Authorization": "Bearer k1"}
    [keys] = fake.find("POST", "/listKeys$")
    assert keys.path.endswith("/onlineEndpoints/gaops-dev-web-classification/listKeys")
