"""Canary checks on Azure are never vacuous (review M1), at the HTTP boundary.

The deployments get the Application Insights connection string (Entra-authenticated ingestion),
and a step whose deployment served fewer requests than ``min_requests_per_step`` either sends
probe requests (the smoke requests, pinned to the deployment with ``azureml-model-deployment``)
or fails with "no traffic observed" and rolls back. What Log Analytics answers is what the
scoring stand-in really served (:mod:`tests.azure.scoring_standin`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from release.azure.clients import AzureContext
from release.azure.telemetry import RequestTelemetry
from release.config import EnvironmentConfig, ReleaseStrategy, SmokeTest
from release.release_state import ReleaseStore
from release.strategies import Rollout, RolloutFailed
from release.targets.base import DeploymentSpec
from release.targets.managed import ManagedTarget
from tests.azure.conftest import APPI_CONNECTION_STRING
from tests.azure.fake_arm import FakeAzure
from tests.azure.scoring_standin import QUERY_PATH, Scoring, logs_from_served, scoring_standin

FLOW = "web_classification"
IMAGE = "gaopsdevacr.azurecr.io/flows/web_classification@sha256:" + "ef" * 32
SMOKE = [SmokeTest(name="classifies", request={"url": "https://example.org/"}, expect_keys=["category"])]


class ReachableManaged(ManagedTarget):
    standin: Scoring

    def scoring_url(self, deployment: str | None = None) -> str:
        super().scoring_url(deployment)
        return self.standin.url(None)


@pytest.fixture
def scoring(fake: FakeAzure) -> Iterator[Scoring]:
    with scoring_standin() as standin:
        logs_from_served(fake, standin)
        yield standin


@pytest.fixture
def target(dev_config: EnvironmentConfig, dev_ctx: AzureContext, scoring: Scoring) -> ReachableManaged:
    t = ReachableManaged(dev_config, FLOW, dev_ctx)
    t.standin = scoring
    t.telemetry = RequestTelemetry(dev_ctx, dev_config, min_interval_s=0.0, environ={})
    t.ensure_endpoint()
    t.create_or_update(DeploymentSpec(flow=FLOW, name="blue-0001", image=IMAGE), timeout_s=30)
    t.set_traffic({"blue-0001": 100})
    return t


def settings(**kw: object) -> ReleaseStrategy:
    base: dict[str, object] = {
        "strategy": "ab",
        "steps": [10, 100],
        "step_wait_seconds": 0.5,
        "readiness_timeout_seconds": 10,
        "smoke_tests": SMOKE,
        "min_requests_per_step": 5,
    }
    return ReleaseStrategy(**{**base, **kw})  # type: ignore[arg-type]


def test_deployments_get_entra_authenticated_telemetry(target: ReachableManaged, fake: FakeAzure) -> None:
    [put] = [c for c in fake.find("PUT", r"/deployments/blue-0001$")]
    env = put.body["properties"]["environmentVariables"]
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == APPI_CONNECTION_STRING
    assert env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert env["OTEL_SERVICE_NAME"] == "blue-0001"  # AppRoleName, what the canary query groups by


def test_a_step_without_traffic_fails_and_rolls_back(
    target: ReachableManaged, fake: FakeAzure, scoring: Scoring, tmp_path: Path
) -> None:
    store = ReleaseStore(FLOW, "dev", tmp_path)
    with pytest.raises(RolloutFailed, match=r"failed at 10 % \(no traffic observed on green-0002: 2 request"):
        Rollout(target, settings(probe_traffic=False), store, drain_s=0).run(
            DeploymentSpec(flow=FLOW, name="green-0002", image=IMAGE)
        )
    assert target.get_traffic() == {"blue-0001": 100}
    assert fake.find("DELETE", "/deployments/green-0002$")
    assert store.load().history[-1].status == "rolled_back"
    # the query asked Log Analytics about the new deployment; in the step it had only the smoke
    # test (a readiness request and the test itself), after 2 more smoke requests before the step
    assert any('"green-0002"' in c.body["query"] for c in fake.find("POST", QUERY_PATH))
    assert scoring.served["green-0002"] == 2 + 2


def test_probe_requests_give_the_step_traffic_to_judge(
    target: ReachableManaged, scoring: Scoring, tmp_path: Path
) -> None:
    store = ReleaseStore(FLOW, "dev", tmp_path)
    result = Rollout(target, settings(), store, drain_s=0).run(
        DeploymentSpec(flow=FLOW, name="green-0002", image=IMAGE)
    )
    assert result.status == "live" and target.get_traffic() == {"green-0002": 100}
    # 2 smoke requests before traffic moves; per step 2 smoke requests, then exactly the 3
    # missing probes, pinned to the deployment; the last step adds the smoke test through the
    # endpoint (no deployment header: "endpoint")
    assert scoring.served["green-0002"] == 2 + 2 * 5
    assert scoring.served["endpoint"] == 2


def test_zero_minimum_relies_on_smoke_tests_alone(target: ReachableManaged, tmp_path: Path) -> None:
    store = ReleaseStore(FLOW, "dev", tmp_path)
    result = Rollout(target, settings(min_requests_per_step=0, probe_traffic=False), store, drain_s=0).run(
        DeploymentSpec(flow=FLOW, name="green-0002", image=IMAGE)
    )
    assert result.status == "live"
