"""Real-traffic canary metrics for the Azure targets, read from the environment's Application
Insights (workspace-based: the data lives in the Log Analytics workspace infra creates).

One KQL query over ``AppRequests`` per check, through the Log Analytics query REST API
(``POST https://api.loganalytics.io/v1/workspaces/<customerId>/query``) with azure-core's
pipeline and the environment's credential (scope ``https://api.loganalytics.io/.default``):
request count, failed count (HTTP 5xx, or a failed request without an HTTP code) and p99 of
``DurationMs`` per deployment since a time.

Which row belongs to which deployment (see docs/azure.md, "Canary metrics"):

* every deployment runs with ``OTEL_SERVICE_NAME=<deployment>``, so an OpenTelemetry / Azure
  Monitor exporter in the image reports the deployment as the cloud role name (``AppRoleName``);
* Azure ML online endpoints: the ``azureml-model-deployment`` custom dimension
  (``Properties``) when the telemetry records it, else ``AppRoleName``.

The workspace id (``customerId``) comes from ``GENAIOPS_LOG_ANALYTICS_WORKSPACE_ID`` when the
pipeline sets it, otherwise from ARM (``GET .../Microsoft.OperationalInsights/workspaces/<name>``).
Every request has a timeout, retries are bounded, a missing ``AppRequests`` table (no traffic
yet) means zero requests, and queries are spaced by ``min_interval_s`` (the strategies poll
often; Log Analytics ingestion takes minutes anyway).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from azure.core.exceptions import AzureError
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest, HttpResponse

from infra import naming
from release.azure import names
from release.azure.clients import ARM_SCOPE, AzureCallError, AzureContext, describe
from release.config import EnvironmentConfig
from release.errors import UserError
from release.targets.base import TrafficMetrics

log = logging.getLogger(__name__)

LOGS_SCOPE = "https://api.loganalytics.io/.default"
LOGS_ENDPOINT = "https://api.loganalytics.io/v1"
ARM_ENDPOINT = "https://management.azure.com"
WORKSPACE_API = "2022-10-01"  # Microsoft.OperationalInsights/workspaces
# Microsoft.Insights/components (properties.ConnectionString), a stable api-version:
# https://learn.microsoft.com/rest/api/application-insights/components/get
COMPONENTS_API = "2020-02-02"
WORKSPACE_ID_ENV = "GENAIOPS_LOG_ANALYTICS_WORKSPACE_ID"
QUERY_TIMEOUT_S = 30.0  # server-side (Prefer: wait=) and client read timeout
RETRIES = 3
MIN_INTERVAL_S = 15.0

Source = Literal["azureml", "appservice"]
# the deployment a request row belongs to, per target kind
_DEPLOYMENT_COLUMN: dict[str, str] = {
    "azureml": 'coalesce(tostring(Properties["azureml-model-deployment"]), AppRoleName)',
    "appservice": "AppRoleName",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_MISSING_TABLE = ("SEM0100", "Failed to resolve table")


class TelemetryError(AzureCallError):
    """Application Insights could not be read; the message says why and what to do."""


def kql_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def requests_query(source: Source, deployments: Iterable[str], since: float) -> str:
    """The KQL: per deployment, requests, failures and p99 duration since ``since``."""
    wanted = sorted(set(deployments))
    for name in wanted:
        if not _NAME_RE.match(name):
            raise UserError(f"deployment name {name!r} cannot be used in a telemetry query")
    listed = ", ".join(f'"{name}"' for name in wanted)
    return "\n".join(
        [
            "AppRequests",
            f"| where TimeGenerated >= datetime({kql_time(since)})",
            f"| extend deployment = {_DEPLOYMENT_COLUMN[source]}",
            f"| where deployment in ({listed})",
            "| summarize requests = count(),"
            " errors = countif(toint(ResultCode) >= 500 or (isnull(toint(ResultCode)) and Success == false)),"
            " p99_ms = percentile(DurationMs, 99) by deployment",
        ]
    )


def parse_metrics(body: dict[str, Any], deployments: Iterable[str]) -> dict[str, TrafficMetrics]:
    """``tables[0].columns/rows`` -> metrics per deployment; zeros for deployments without rows."""
    out = {name: TrafficMetrics(requests=0, errors=0, p99_ms=0.0) for name in deployments}
    tables = body.get("tables") or []
    if not tables:
        return out
    table = tables[0]
    columns = [str(c.get("name")) for c in table.get("columns", [])]
    missing = {"deployment", "requests", "errors", "p99_ms"} - set(columns)
    if missing:
        raise TelemetryError(f"Log Analytics answered without column(s) {sorted(missing)}: {columns}")
    for row in table.get("rows", []):
        values = dict(zip(columns, row, strict=False))
        name = str(values["deployment"])
        if name in out:
            out[name] = TrafficMetrics(
                requests=int(values["requests"] or 0),
                errors=int(values["errors"] or 0),
                p99_ms=float(values["p99_ms"] or 0.0),
            )
    return out


def _missing_table(error: dict[str, Any]) -> bool:
    text = json.dumps(error)
    return any(marker in text for marker in _MISSING_TABLE)


class RequestTelemetry:
    """Reads per-deployment request metrics of one environment from Log Analytics."""

    def __init__(
        self,
        ctx: AzureContext,
        cfg: EnvironmentConfig,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        timeout_s: float = QUERY_TIMEOUT_S,
        retries: int = RETRIES,
        environ: dict[str, str] | None = None,
    ) -> None:
        names.base(cfg)  # a clear error for kind: local
        self.ctx = ctx
        self.cfg = cfg
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.environ = os.environ if environ is None else environ
        self.workspace_name = naming.log_analytics(cfg)
        self._workspace_id: str | None = None
        self._last: tuple[float, float, dict[str, TrafficMetrics]] | None = None  # (at, since, result)

    # -- HTTP -----------------------------------------------------------------------------
    def _send(self, request: HttpRequest, scope: str) -> HttpResponse:
        policies = [
            RetryPolicy(retry_total=self.retries, retry_backoff_max=10),
            BearerTokenCredentialPolicy(self.ctx.credential, scope),
        ]
        pipeline: Pipeline[Any, Any] = Pipeline(
            transport=self.ctx.transport or RequestsTransport(), policies=policies
        )
        try:
            response: HttpResponse = pipeline.run(
                request, connection_timeout=self.timeout_s, read_timeout=self.timeout_s + 5
            ).http_response
            response.read()
        except AzureError as exc:
            raise TelemetryError(f"{request.method} {request.url.split('?')[0]}: {describe(exc)}") from None
        return response

    @staticmethod
    def _json(response: HttpResponse) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # -- ingestion ------------------------------------------------------------------------
    def connection_string(self) -> str:
        """The environment's Application Insights connection string (``ConnectionString``).

        Deployments send request telemetry with it; ingestion is authenticated with the
        deployment's Entra identity (``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD``,
        role Monitoring Metrics Publisher), because local auth is off on the component:
        https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication
        Raises :class:`TelemetryError` when the component is missing or has no connection string.
        """
        name = naming.app_insights(self.cfg)
        path = (
            f"/subscriptions/{self.ctx.subscription_id}/resourceGroups/{self.ctx.resource_group}"
            f"/providers/Microsoft.Insights/components/{name}"
        )
        response = self._send(
            HttpRequest("GET", f"{ARM_ENDPOINT}{path}?api-version={COMPONENTS_API}"), ARM_SCOPE
        )
        value = self._json(response).get("properties", {}).get("ConnectionString")
        if response.status_code != 200 or not isinstance(value, str) or not value:
            raise TelemetryError(
                f"Application Insights {name} in {self.ctx.resource_group} has no connection string "
                f"(HTTP {response.status_code}); is the environment's infrastructure deployed?"
            )
        return value

    # -- workspace ------------------------------------------------------------------------
    def workspace_id(self) -> str:
        """The Log Analytics workspace id (``customerId``), from the environment or ARM."""
        if self._workspace_id:
            return self._workspace_id
        given = self.environ.get(WORKSPACE_ID_ENV, "").strip()
        if given:
            if not _GUID_RE.match(given):
                raise UserError(
                    f"{WORKSPACE_ID_ENV}={given!r} is not a workspace id (a GUID: the Log Analytics "
                    f"workspace's customerId); unset it to read it from {self.workspace_name}"
                )
            self._workspace_id = given
            return given
        path = (
            f"/subscriptions/{self.ctx.subscription_id}/resourceGroups/{self.ctx.resource_group}"
            f"/providers/Microsoft.OperationalInsights/workspaces/{self.workspace_name}"
        )
        response = self._send(
            HttpRequest("GET", f"{ARM_ENDPOINT}{path}?api-version={WORKSPACE_API}"), ARM_SCOPE
        )
        body = self._json(response)
        if response.status_code == 404:
            raise TelemetryError(
                f"Log Analytics workspace {self.workspace_name} not found in {self.ctx.resource_group}; "
                "is the environment's infrastructure deployed (make infra ENV=...)?"
            )
        if response.status_code != 200:
            raise TelemetryError(
                f"read Log Analytics workspace {self.workspace_name}: {self._error(response, body)}"
            )
        customer = str((body.get("properties") or {}).get("customerId") or "")
        if not _GUID_RE.match(customer):
            raise TelemetryError(f"Log Analytics workspace {self.workspace_name} has no customerId")
        self._workspace_id = customer
        return customer

    # -- queries --------------------------------------------------------------------------
    def query(self, kql: str) -> dict[str, Any] | None:
        """Run one query; None when ``AppRequests`` does not exist yet (nothing was ingested)."""
        url = f"{LOGS_ENDPOINT}/workspaces/{self.workspace_id()}/query"
        request = HttpRequest(
            "POST",
            url,
            json={"query": kql},
            headers={"Prefer": f"wait={int(self.timeout_s)}"},
        )
        response = self._send(request, LOGS_SCOPE)
        body = self._json(response)
        if response.status_code == 200 and not body.get("error"):
            return body
        if response.status_code in (200, 400) and _missing_table(body.get("error") or {}):
            log.info("AppRequests does not exist yet in %s: no requests recorded", self.workspace_name)
            return None
        if response.status_code == 200:
            raise TelemetryError(
                f"Log Analytics query on {self.workspace_name} returned partial results: "
                f"{(body.get('error') or {}).get('message', 'unknown error')}"
            )
        hint = ""
        if response.status_code in (401, 403):
            hint = f"; the deploying identity needs 'Log Analytics Reader' on {self.workspace_name}"
        raise TelemetryError(
            f"Log Analytics query on {self.workspace_name}: {self._error(response, body)}{hint}"
        )

    @staticmethod
    def _error(response: HttpResponse, body: dict[str, Any]) -> str:
        error = body.get("error") or {}
        code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        return f"HTTP {response.status_code} {code} {message or response.reason or ''}".replace(
            "  ", " "
        ).strip()

    def request_metrics(
        self, source: Source, deployments: Iterable[str], since: float
    ) -> dict[str, TrafficMetrics]:
        wanted = sorted(set(deployments))
        if not wanted:
            return {}
        body = self.query(requests_query(source, wanted, since))
        if body is None:
            return {name: TrafficMetrics(requests=0, errors=0, p99_ms=0.0) for name in wanted}
        return parse_metrics(body, wanted)

    def metrics(
        self, source: Source, deployments: Callable[[], Iterable[str]], since: float
    ) -> dict[str, TrafficMetrics]:
        """:meth:`request_metrics`, at most once per ``min_interval_s`` for the same ``since``
        (the deployments are listed only when a query is due)."""
        at = time.monotonic()
        if self._last is not None:
            last_at, last_since, result = self._last
            if last_since == since and at - last_at < self.min_interval_s:
                return dict(result)
        result = self.request_metrics(source, deployments(), since)
        self._last = (at, since, result)
        return dict(result)
