"""Release history lives with the target: status and rollback from an empty ``.genaiops/``.

Two releases go out through the real :class:`release.strategies.Rollout` against the fake ARM
(managed online endpoint and App Service), each run with its own empty release folder, as two
CI runs on two fresh agents would. A third fresh run then rolls back, and traffic must go back
to the first release: the history is rebuilt from deployment tags / slot settings and traffic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from release.azure.clients import AzureContext
from release.azure.telemetry import RequestTelemetry
from release.config import EnvironmentConfig, ReleaseStrategy, SmokeTest
from release.errors import UserError
from release.release_state import ReleaseStore
from release.strategies import Rollout, load_reconciled, roll_back
from release.targets.appservice import AppServiceTarget
from release.targets.base import DeploymentSpec
from release.targets.managed import ManagedTarget
from tests.azure.fake_arm import FakeAzure
from tests.azure.scoring_standin import Scoring, logs_from_served, scoring_standin
from tests.azure.test_appservice_target import app_fake, swap_slots  # noqa: F401  (fixture)

IMAGE = "gaopsdevacr.azurecr.io/flows/{flow}@sha256:" + "cd" * 32
SETTINGS = ReleaseStrategy(
    strategy="bluegreen",
    steps=[100],
    step_wait_seconds=0,
    readiness_timeout_seconds=10,
    smoke_tests=[SmokeTest(name="answers", request={"ticket": "charged twice"}, expect_keys=["category"])],
)


@pytest.fixture
def scoring(fake: FakeAzure) -> Iterator[Scoring]:
    with scoring_standin() as standin:
        logs_from_served(fake, standin)
        yield standin


class ReachableManaged(ManagedTarget):
    standin: Scoring

    def scoring_url(self, deployment: str | None = None) -> str:
        super().scoring_url(deployment)  # the endpoint must exist on ARM
        return self.standin.url(None)  # the deployment is chosen by the azureml-model-deployment header


class ReachableAppService(AppServiceTarget):
    standin: Scoring

    def scoring_url(self, deployment: str | None = None) -> str:
        super().scoring_url(deployment)  # the deployment must be in a slot
        return self.standin.url(deployment)


def spec(flow: str, name: str) -> DeploymentSpec:
    return DeploymentSpec(flow=flow, name=name, image=IMAGE.format(flow=flow))


def fresh_store(tmp_path: Path, flow: str, run: str) -> ReleaseStore:
    """The release folder of a new CI run: empty."""
    return ReleaseStore(flow, "dev", tmp_path / run)


def test_managed_rollback_from_an_empty_release_folder(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, fake: FakeAzure, scoring: Scoring, tmp_path: Path
) -> None:
    flow = "web_classification"
    target = ReachableManaged(dev_config, flow, dev_ctx)
    target.standin = scoring
    target.telemetry = RequestTelemetry(dev_ctx, dev_config, min_interval_s=0.0, environ={})
    Rollout(target, SETTINGS, fresh_store(tmp_path, flow, "run1"), drain_s=0).run(spec(flow, "wc-first"))
    Rollout(target, SETTINGS, fresh_store(tmp_path, flow, "run2"), drain_s=0).run(spec(flow, "wc-second"))
    assert target.get_traffic() == {"wc-second": 100}
    # the previous release is kept for the rollback window, even though run2 knew nothing of it
    assert {d.name for d in target.list_deployments()} == {"wc-first", "wc-second"}
    # both deployments carry their creation time as a tag: that is the history
    tags = {
        c.path.rsplit("/", 1)[-1]: c.body.get("tags", {}) for c in fake.find("PUT", r"/deployments/[^/]+$")
    }
    assert float(tags["wc-first"]["genaiops.created-at"]) <= float(tags["wc-second"]["genaiops.created-at"])

    store3 = fresh_store(tmp_path, flow, "run3")
    with store3:
        live = load_reconciled(target, store3).live()
    assert live is not None and live.deployment == "wc-second"
    result = roll_back(target, SETTINGS, fresh_store(tmp_path, flow, "run4"), drain_s=0)
    assert result.deployment == "wc-first"
    assert target.get_traffic() == {"wc-first": 100}
    assert fake.find("DELETE", "/deployments/wc-second$")  # the rolled-back release is removed
    with pytest.raises(UserError, match="no earlier release to roll back to"):
        roll_back(target, SETTINGS, fresh_store(tmp_path, flow, "run5"), drain_s=0)


def test_app_service_rollback_from_an_empty_release_folder(
    dev_config: EnvironmentConfig,
    dev_ctx: AzureContext,
    app_fake: FakeAzure,  # noqa: F811
    scoring: Scoring,
    tmp_path: Path,
) -> None:
    flow = "support_triage"
    target = ReachableAppService(dev_config, flow, dev_ctx)
    target.standin = scoring
    target.telemetry = RequestTelemetry(dev_ctx, dev_config, min_interval_s=0.0, environ={})
    target.warmup_interval_s = 0.1
    # infra's app holds "r1-old" in production (see the app_fake fixture); release twice more
    Rollout(target, SETTINGS, fresh_store(tmp_path, flow, "run1"), drain_s=0).run(spec(flow, "st-second"))
    Rollout(target, SETTINGS, fresh_store(tmp_path, flow, "run2"), drain_s=0).run(spec(flow, "st-third"))
    assert target.get_traffic() == {"st-third": 100}
    assert {d.name: d.traffic for d in target.list_deployments()} == {"st-second": 0, "st-third": 100}

    result = roll_back(target, SETTINGS, fresh_store(tmp_path, flow, "run3"), drain_s=0)
    assert result.deployment == "st-second"
    assert target.get_traffic() == {"st-second": 100}
    assert not app_fake.find("DELETE", "/slots/")  # the slot belongs to infra: never deleted
    # the rolled-back release sits in the staging slot, newer than the live one: not a candidate
    with pytest.raises(UserError, match="no earlier release to roll back to"):
        roll_back(target, SETTINGS, fresh_store(tmp_path, flow, "run4"), drain_s=0)
    assert target.get_traffic() == {"st-second": 100}
