"""Canary metrics of the Azure targets, checked at the HTTP boundary.

Our code sends real requests through azure-core (ARM for the Log Analytics workspace's
``customerId``, then ``POST https://api.loganalytics.io/v1/workspaces/<id>/query``); the fake
answers with the REST API's shapes (``tables[0].columns/rows``, OneAPI error bodies). The last
test runs the real A/B strategy on a managed online endpoint and sees it roll back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from release.azure.clients import ARM_SCOPE, AzureContext
from release.azure.telemetry import LOGS_SCOPE, WORKSPACE_ID_ENV, RequestTelemetry, TelemetryError
from release.config import EnvironmentConfig, ReleaseStrategy
from release.errors import UserError
from release.release_state import ReleaseStore
from release.strategies import Rollout, RolloutFailed
from release.targets.appservice import AppServiceTarget
from release.targets.base import DeploymentSpec, TrafficMetrics
from release.targets.managed import ManagedTarget
from tests.azure.conftest import RG, SUB
from tests.azure.fake_arm import TOKEN, FakeAzure, StaticCredential

LA_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/gaops-dev-log"
CUSTOMER = "5b1e0c7a-2d3f-4e5a-9b8c-7d6e5f4a3b2c"
QUERY_PATH = f"/v1/workspaces/{CUSTOMER}/query"
DIGEST = "gaopsdevacr.azurecr.io/flows/web_classification@sha256:" + "ab" * 32
SINCE = datetime(2026, 11, 24, 4, 0, 0, tzinfo=UTC).timestamp()
COLUMNS = [
    {"name": "deployment", "type": "string"},
    {"name": "requests", "type": "long"},
    {"name": "errors", "type": "long"},
    {"name": "p99_ms", "type": "real"},
]
MISSING_TABLE = {
    "error": {
        "message": "The request had some invalid properties",
        "code": "BadArgumentError",
        "correlationId": "0f0e0d0c-0000-4000-8000-000000000001",
        "innererror": {
            "code": "SemanticError",
            "message": "A semantic error occurred.",
            "innererror": {
                "code": "SEM0100",
                "message": "'where' operator: Failed to resolve table or column expression named 'AppRequests'",
            },
        },
    }
}


def answer(rows: list[list[Any]]) -> dict[str, Any]:
    return {"tables": [{"name": "PrimaryResult", "columns": COLUMNS, "rows": rows}]}


def spec(name: str) -> DeploymentSpec:
    return DeploymentSpec(flow="web_classification", name=name, image=DIGEST)


@pytest.fixture
def logs(fake: FakeAzure) -> FakeAzure:
    fake.put_resource(LA_PATH, {"location": "westeurope", "properties": {"customerId": CUSTOMER}})
    return fake


def telemetry(ctx: AzureContext, cfg: EnvironmentConfig, **kw: Any) -> RequestTelemetry:
    return RequestTelemetry(ctx, cfg, **{"min_interval_s": 0.0, "environ": {}, **kw})


def test_managed_target_reads_per_deployment_metrics(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, logs: FakeAzure, credential: StaticCredential
) -> None:
    target = ManagedTarget(dev_config, "web_classification", dev_ctx)
    target.ensure_endpoint()
    target.create_or_update(spec("blue-0001"), timeout_s=30)
    target.create_or_update(spec("green-0002"), timeout_s=30)
    rows = [["blue-0001", 120, 0, 350.0], ["green-0002", 40, 6, 2100.5], ["other-0003", 9, 9, 1.0]]
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (200, answer(rows)))
    target.telemetry = telemetry(dev_ctx, dev_config)

    metrics = target.traffic_metrics(SINCE)

    assert metrics == {
        "blue-0001": TrafficMetrics(requests=120, errors=0, p99_ms=350.0),
        "green-0002": TrafficMetrics(requests=40, errors=6, p99_ms=2100.5),
    }
    assert metrics["green-0002"].error_rate == pytest.approx(0.15)
    # the workspace id is the Log Analytics workspace's customerId, read from ARM
    [workspace] = logs.find("GET", "/Microsoft.OperationalInsights/workspaces/")
    assert workspace.host == "management.azure.com" and workspace.path == LA_PATH
    assert workspace.api_version == "2022-10-01"
    [query] = logs.find("POST", QUERY_PATH)
    assert query.host == "api.loganalytics.io" and query.path == QUERY_PATH
    assert query.api_version is None
    assert query.headers["Authorization"] == f"Bearer {TOKEN}"
    assert query.headers["Prefer"] == "wait=30"
    kql = query.body["query"]
    assert kql.startswith("AppRequests\n")
    assert "| where TimeGenerated >= datetime(2026-11-24T04:00:00.000000Z)" in kql
    assert 'coalesce(tostring(Properties["azureml-model-deployment"]), AppRoleName)' in kql
    assert '| where deployment in ("blue-0001", "green-0002")' in kql
    assert "toint(ResultCode) >= 500" in kql and "percentile(DurationMs, 99)" in kql
    assert LOGS_SCOPE in credential.scopes and ARM_SCOPE in credential.scopes
    # the deployment reports itself under its own name (cloud role name)
    [put] = logs.find("PUT", "/deployments/green-0002$")
    assert put.body["properties"]["environmentVariables"]["OTEL_SERVICE_NAME"] == "green-0002"


def test_appservice_target_reads_metrics_by_role_name(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, logs: FakeAzure
) -> None:
    site = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/gaops-dev-support-triage"
    logs.put_resource(site, {"location": "westeurope", "properties": {}})
    logs.put_resource(f"{site}/slots/staging", {"location": "westeurope", "properties": {}})
    logs.put_resource(f"{site}/config/appsettings", {"properties": {"GENAIOPS_DEPLOYMENT": "r1-old"}})
    logs.put_resource(
        f"{site}/slots/staging/config/appsettings", {"properties": {"GENAIOPS_DEPLOYMENT": "r2-new"}}
    )
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (200, answer([["r2-new", 10, 1, 80.0]])))
    target = AppServiceTarget(dev_config, "support_triage", dev_ctx)
    target.telemetry = telemetry(dev_ctx, dev_config)

    metrics = target.traffic_metrics(SINCE)

    assert metrics == {
        "r1-old": TrafficMetrics(requests=0, errors=0, p99_ms=0.0),  # no rows: no traffic yet
        "r2-new": TrafficMetrics(requests=10, errors=1, p99_ms=80.0),
    }
    kql = logs.find("POST", QUERY_PATH)[0].body["query"]
    assert "| extend deployment = AppRoleName" in kql
    assert '| where deployment in ("r1-old", "r2-new")' in kql
    # App Service: the role name travels with the slot content as an app setting
    assert target.app_settings(spec("r2-new"))["OTEL_SERVICE_NAME"] == "r2-new"


def test_missing_table_means_no_traffic_not_an_error(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, logs: FakeAzure
) -> None:
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (400, MISSING_TABLE))
    reader = telemetry(dev_ctx, dev_config)
    assert reader.request_metrics("azureml", ["blue-0001"], SINCE) == {
        "blue-0001": TrafficMetrics(requests=0, errors=0, p99_ms=0.0)
    }


def test_errors_are_clear_and_retries_bounded(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, logs: FakeAzure
) -> None:
    forbidden = {
        "error": {
            "code": "InsufficientAccessError",
            "message": "The provided credentials have insufficient access",
        }
    }
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (403, forbidden))
    with pytest.raises(
        TelemetryError, match=r"HTTP 403 InsufficientAccessError.*'Log Analytics Reader' on gaops-dev-log"
    ):
        telemetry(dev_ctx, dev_config).request_metrics("azureml", ["blue-0001"], SINCE)

    unavailable = {"error": {"code": "ServiceUnavailable", "message": "try later"}}
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (503, unavailable))
    before = len(logs.find("POST", QUERY_PATH))
    with pytest.raises(TelemetryError, match="HTTP 503 ServiceUnavailable"):
        telemetry(dev_ctx, dev_config, retries=2).request_metrics("azureml", ["blue-0001"], SINCE)
    assert len(logs.find("POST", QUERY_PATH)) - before == 3  # the first try and 2 retries, no more

    logs.store.pop(LA_PATH.lower())
    with pytest.raises(TelemetryError, match=r"workspace gaops-dev-log not found.*make infra"):
        telemetry(dev_ctx, dev_config).request_metrics("azureml", ["blue-0001"], SINCE)


def test_workspace_id_from_the_environment_skips_arm(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, fake: FakeAzure
) -> None:
    fake.on("POST", f"^{QUERY_PATH}$", lambda c: (200, answer([])))
    reader = telemetry(dev_ctx, dev_config, environ={WORKSPACE_ID_ENV: CUSTOMER})
    assert reader.request_metrics("azureml", ["a-1"], SINCE)["a-1"].requests == 0
    assert fake.find("GET", "OperationalInsights") == []

    bad = telemetry(dev_ctx, dev_config, environ={WORKSPACE_ID_ENV: "gaops-dev-log"})
    calls = len(fake.calls)
    with pytest.raises(UserError, match=f"{WORKSPACE_ID_ENV}='gaops-dev-log' is not a workspace id"):
        bad.request_metrics("azureml", ["a-1"], SINCE)
    assert len(fake.calls) == calls
    with pytest.raises(UserError, match="cannot be used in a telemetry query"):
        reader.request_metrics("azureml", ['x") | take 1 //'], SINCE)


def test_queries_are_spaced_while_a_step_is_watched(
    dev_config: EnvironmentConfig, dev_ctx: AzureContext, logs: FakeAzure
) -> None:
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (200, answer([["a-1", 3, 0, 10.0]])))
    listed: list[int] = []

    def deployments() -> list[str]:
        listed.append(1)
        return ["a-1"]

    reader = telemetry(dev_ctx, dev_config, min_interval_s=3600.0)
    first = reader.metrics("azureml", deployments, SINCE)
    assert reader.metrics("azureml", deployments, SINCE) == first  # answered from the last query
    assert len(logs.find("POST", QUERY_PATH)) == 1 and len(listed) == 1
    reader.metrics("azureml", deployments, SINCE + 60)  # a new step: a new query
    assert len(logs.find("POST", QUERY_PATH)) == 2 and len(listed) == 2


class _Scoring(BaseHTTPRequestHandler):
    """The deployments' scoring route as a client reaches it (smoke tests need real HTTP)."""

    def do_GET(self) -> None:
        self._reply({"status": "Healthy"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply({"category": "ok"})

    def _reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def scoring() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scoring)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/score"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class ReachableManagedTarget(ManagedTarget):
    """The managed target, with the scoring URL of a local stand-in (Azure is unreachable here)."""

    local_url = ""

    def scoring_url(self, deployment: str | None = None) -> str:
        super().scoring_url(deployment)  # the endpoint must exist on ARM
        return self.local_url


def test_canary_on_azure_rolls_back_when_telemetry_shows_errors(
    dev_config: EnvironmentConfig,
    dev_ctx: AzureContext,
    logs: FakeAzure,
    scoring: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WORKSPACE_ID_ENV, raising=False)
    target = ReachableManagedTarget(dev_config, "web_classification", dev_ctx)
    target.local_url = scoring
    target.ensure_endpoint()
    target.create_or_update(spec("blue-0001"), timeout_s=30)
    target.set_traffic({"blue-0001": 100})
    rows = [["blue-0001", 180, 0, 300.0], ["green-0002", 20, 4, 900.0]]
    logs.on("POST", f"^{QUERY_PATH}$", lambda c: (200, answer(rows)))
    settings = ReleaseStrategy(
        strategy="ab",
        steps=[10, 100],
        step_wait_seconds=5,
        max_error_rate=0.05,
        readiness_timeout_seconds=10,
        rollback_window_minutes=0,
    )
    store = ReleaseStore("web_classification", "dev", tmp_path)

    with pytest.raises(
        RolloutFailed, match=r"failed at 10 % \(error rate 20.0% over 20 requests exceeds 5.0%\)"
    ):
        Rollout(target, settings, store, drain_s=0).run(spec("green-0002"))

    traffic_puts = [c.body["properties"]["traffic"] for c in logs.find("PUT", "/onlineEndpoints/[^/]+$")]
    assert traffic_puts[-2:] == [
        {"blue-0001": 90, "green-0002": 10},  # the canary step
        {"blue-0001": 100},  # back, by itself (the SDK leaves 0 % shares out)
    ]
    assert target.get_traffic() == {"blue-0001": 100}
    assert logs.find("DELETE", "/deployments/green-0002$")  # the broken canary is removed
    [query] = logs.find("POST", QUERY_PATH)
    assert '"green-0002"' in query.body["query"] and "TimeGenerated >= datetime(" in query.body["query"]
    assert store.load().history[-1].status == "rolled_back"
