"""App Service target at the HTTP boundary: slot deploy, warm-up, routing percentage and swap.

azure-mgmt-web sends real requests; the fake answers like ARM and, for ``slotsswap``, swaps
the slots' content (image and app settings) the way App Service does.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from release.azure import names
from release.azure.clients import AzureContext
from release.config import EnvironmentConfig
from release.errors import CheckFailed
from release.targets.appservice import AppServiceTarget
from release.targets.base import DeploymentSpec, TrafficError
from tests.azure.conftest import RG, SUB
from tests.azure.fake_arm import Call, FakeAzure

APP = "gaops-dev-support-triage"
SITE = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/{APP}"
SLOT = f"{SITE}/slots/staging"
WEB_API = "2025-05-01"  # azure-mgmt-web 11.0.1
OLD = "gaopsdevacr.azurecr.io/flows/support_triage@sha256:" + "01" * 32
NEW = "gaopsdevacr.azurecr.io/flows/support_triage@sha256:" + "02" * 32
CANARY = "canary-secret-93c0e1f4-do-not-leak"


def swap_slots(fake: FakeAzure) -> Any:
    """What App Service does on slotsswap: the slots exchange image and (non-sticky) settings."""

    def handler(call: Call) -> tuple[int, Any]:
        key = lambda path: path.lower()  # noqa: E731
        prod_settings = fake.store.get(key(SITE + "/config/appsettings"), {}).get("properties", {})
        slot_settings = fake.store.get(key(SLOT + "/config/appsettings"), {}).get("properties", {})
        fake.put_resource(SITE + "/config/appsettings", {"properties": dict(slot_settings)})
        fake.put_resource(SLOT + "/config/appsettings", {"properties": dict(prod_settings)})
        prod_web = fake.store[key(SITE + "/config/web")]["properties"]
        slot_web = fake.store[key(SLOT + "/config/web")]["properties"]
        prod_web["linuxFxVersion"], slot_web["linuxFxVersion"] = (
            slot_web.get("linuxFxVersion"),
            prod_web.get("linuxFxVersion"),
        )  # routing rules (experiments) stay with the production site
        return 200, None

    return handler


@pytest.fixture
def app_fake(fake: FakeAzure) -> FakeAzure:
    fake.put_resource(
        SITE,
        {
            "location": "westeurope",
            "kind": "app,linux,container",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "serverFarmId": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/serverfarms/gaops-dev-plan"
            },
        },
    )
    fake.put_resource(f"{SITE}/config/web", {"properties": {"linuxFxVersion": f"DOCKER|{OLD}"}})
    fake.put_resource(
        f"{SITE}/config/appsettings",
        {"properties": {"GENAIOPS_DEPLOYMENT": "r1-old", "GENAIOPS_IMAGE": OLD, "WEBSITES_PORT": "8080"}},
    )
    fake.on("GET", r"^/health$", lambda c: (200, {"status": "Healthy"}))
    fake.on("POST", r"/slots/staging/slotsswap$", swap_slots(fake))
    return fake


@pytest.fixture
def target(dev_config: EnvironmentConfig, dev_ctx: AzureContext, app_fake: FakeAzure) -> AppServiceTarget:
    t = AppServiceTarget(dev_config, "support_triage", dev_ctx)
    t.warmup_interval_s = 0.1
    return t


def new_spec() -> DeploymentSpec:
    return DeploymentSpec(
        flow="support_triage",
        name="r2-new",
        image=NEW,
        env={"LOG_LEVEL": "INFO"},
        secret_env={"AOAI_API_KEY": "AOAI_API_KEY"},
    )


def test_deploy_to_slot_then_ab_then_swap(
    target: AppServiceTarget,
    app_fake: FakeAzure,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs log requests at DEBUG
    monkeypatch.setenv("AOAI_API_KEY", CANARY)
    assert target.get_traffic() == {"r1-old": 100}

    info = target.create_or_update(new_spec(), timeout_s=10)
    assert info.traffic == 0

    # the slot is created next to production, on the same plan and identity
    [slot_put] = app_fake.find("PUT", r"/slots/staging$")
    assert slot_put.path == SLOT and slot_put.api_version == WEB_API
    assert slot_put.body["identity"] == {"type": "SystemAssigned"}
    assert slot_put.body["properties"]["serverFarmId"].endswith("/serverfarms/gaops-dev-plan")
    assert slot_put.body["properties"]["httpsOnly"] is True
    assert slot_put.body["properties"]["siteConfig"]["acrUseManagedIdentityCreds"] is True

    kv = f"https://{names.key_vault(target.cfg)}.vault.azure.net/secrets"
    assert kv.startswith("https://gaops-dev-kv-")  # infra.naming's vault, with its stable suffix
    [settings] = app_fake.find("PUT", r"/slots/staging/config/appsettings$")
    values = settings.body["properties"]
    assert values["AOAI_API_KEY"] == f"@Microsoft.KeyVault(SecretUri={kv}/aoai-api-key)"
    assert values["APPLICATIONINSIGHTS_CONNECTION_STRING"] == (
        f"@Microsoft.KeyVault(SecretUri={kv}/appinsights-connection-string)"
    )
    assert values["WEBSITES_PORT"] == "8080"
    assert values["GENAIOPS_DEPLOYMENT"] == "r2-new" and values["GENAIOPS_IMAGE"] == NEW
    assert values["LOG_LEVEL"] == "INFO"

    [image] = app_fake.find("PATCH", r"/slots/staging/config/web$")
    assert image.api_version == WEB_API
    assert image.body["properties"]["linuxFxVersion"] == f"DOCKER|{NEW}"
    assert image.body["properties"]["acrUseManagedIdentityCreds"] is True
    assert image.body["properties"]["healthCheckPath"] == "/health"

    [warm] = app_fake.find("GET", r"^/health$")
    assert warm.host == f"{APP}-staging.azurewebsites.net"
    assert app_fake.calls.index(warm) > app_fake.calls.index(image)
    assert target.scoring_url("r2-new") == f"https://{APP}-staging.azurewebsites.net/score"
    assert target.get_traffic() == {"r1-old": 100}  # nothing routed yet

    # A/B: a routing percentage to the slot
    target.set_traffic({"r1-old": 90, "r2-new": 10})
    [ramp] = app_fake.find("PATCH", rf"/sites/{APP}/config/web$")
    assert ramp.body["properties"]["experiments"]["rampUpRules"] == [
        {"name": "staging", "actionHostName": f"{APP}-staging.azurewebsites.net", "reroutePercentage": 10}
    ]
    assert target.get_traffic() == {"r1-old": 90, "r2-new": 10}

    # blue/green end: swap, then the routing rule is cleared
    target.set_traffic({"r2-new": 100})
    [swap] = app_fake.find("POST", r"/slotsswap$")
    assert swap.path == f"{SLOT}/slotsswap" and swap.api_version == WEB_API
    assert swap.body == {"targetSlot": "production", "preserveVnet": True}
    clear = app_fake.find("PATCH", rf"/sites/{APP}/config/web$")[-1]
    assert app_fake.calls.index(clear) > app_fake.calls.index(swap)
    assert clear.body["properties"]["experiments"]["rampUpRules"] == []
    assert target.get_traffic() == {"r2-new": 100}
    slots = {d.name: d.labels["slot"] for d in target.list_deployments()}
    assert slots == {"r2-new": "production", "r1-old": "staging"}  # the old release stays warm
    assert target.scoring_url() == f"https://{APP}.azurewebsites.net/score"

    # rollback is a swap back
    target.set_traffic({"r1-old": 100})
    assert len(app_fake.find("POST", r"/slotsswap$")) == 2
    assert target.get_traffic() == {"r1-old": 100}
    assert CANARY not in app_fake.all_text()
    assert "deploying" in caplog.text and CANARY not in caplog.text


def test_failed_warm_up_leaves_production_untouched(target: AppServiceTarget, app_fake: FakeAzure) -> None:
    app_fake.on("GET", r"^/health$", lambda c: (503, {"status": "starting"}))
    # a bound with room for several polls (every 0.1 s) even when one request is slow on a busy
    # machine: at least two polls happen whatever the load, and the wait still ends
    with pytest.raises(CheckFailed, match="production traffic was not changed"):
        target.create_or_update(new_spec(), timeout_s=3)
    assert len(app_fake.find("GET", r"^/health$")) >= 2  # retried, within the bound
    assert app_fake.find("PATCH", rf"/sites/{APP}/config/web$") == []
    assert app_fake.find("POST", r"/slotsswap$") == []
    assert target.get_traffic() == {"r1-old": 100}


def test_bad_traffic_is_refused_before_any_write(target: AppServiceTarget, app_fake: FakeAzure) -> None:
    target.create_or_update(new_spec(), timeout_s=10)
    before = len(app_fake.writes())
    for bad in ({"r1-old": 50, "r2-new": 40}, {"r9-ghost": 100}):
        with pytest.raises(TrafficError):
            target.set_traffic(bad)
    # list reads are POST .../appsettings/list; no write of config, routing or swap happened
    writes = [c for c in app_fake.writes()[before:] if not c.path.endswith("/appsettings/list")]
    assert writes == []


def test_slot_with_live_traffic_is_not_overwritten(target: AppServiceTarget, app_fake: FakeAzure) -> None:
    target.create_or_update(new_spec(), timeout_s=10)
    target.set_traffic({"r1-old": 50, "r2-new": 50})
    third = DeploymentSpec(flow="support_triage", name="r3-next", image=NEW)
    with pytest.raises(Exception, match="live traffic"):
        target.create_or_update(third, timeout_s=10)
    with pytest.raises(Exception, match="still receives traffic"):
        target.delete("r2-new")
    target.set_traffic({"r1-old": 100})
    target.delete("r2-new")
    # the slot belongs to infra (its identity holds the roles): its release is cleared, the slot stays
    assert not app_fake.find("DELETE", r"/slots/staging$")
    assert [d.name for d in target.list_deployments()] == ["r1-old"]


def test_first_release_on_a_fresh_app_swaps_into_production(
    target: AppServiceTarget, app_fake: FakeAzure
) -> None:
    # infra created the app with a placeholder image and no release recorded
    app_fake.put_resource(f"{SITE}/config/appsettings", {"properties": {"WEBSITES_PORT": "8080"}})
    assert target.get_traffic() == {}
    target.create_or_update(new_spec(), timeout_s=10)
    with pytest.raises(TrafficError):
        target.set_traffic({"r2-new": 50, "r1-old": 50})  # r1-old does not exist here
    target.set_traffic({"r2-new": 100})
    assert target.get_traffic() == {"r2-new": 100}
    assert [d.name for d in target.list_deployments()] == ["r2-new"]
