"""Request telemetry from a flow image to Application Insights (only when it is configured).

On Azure the release sets ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (and, since the App Insights
resource has local auth disabled, ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD``)
and ``OTEL_SERVICE_NAME=<deployment>``. Each worker then records one OpenTelemetry SERVER span
per ``POST /score`` request and exports it with Azure Monitor's exporter, so ``AppRequests``
rows carry the deployment as ``AppRoleName`` (what :mod:`release.azure.telemetry` queries).

Without a connection string nothing here is imported or started: the local target is unchanged.
Export runs on a background thread with a bounded queue (spans are dropped when it is full) and
bounded network timeouts and retries, so it never blocks or fails a request; a stopping worker
flushes for at most a few seconds. Neither the connection string nor the instrumentation key is
ever logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("genaiops.serving.telemetry")

CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTH_STRING_ENV = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
DEFAULT_SERVICE_NAME = "genaiops-flow"
NETWORK_TIMEOUT_S = 10.0  # connect and read timeout of one export request
RETRIES = 2  # per export batch, then the batch is dropped (no offline storage)
MAX_QUEUE = 2048  # spans waiting for export per worker; more are dropped, never waited for
# the exporter's own background traffic to Microsoft (SDK statistics, remote configuration):
# not ours to send; an operator can still turn it on by setting these variables to "false"
_QUIET_DEFAULTS = {
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
}


class TelemetryConfigError(ValueError):
    """A telemetry variable is set but unusable; the message names it (never its value)."""


@dataclass(frozen=True)
class TelemetryConfig:
    connection_string: str
    service_name: str
    aad: bool  # authenticate with the managed identity (App Insights local auth disabled)
    client_id: str | None = None  # a user-assigned identity's client id, when given

    def __repr__(self) -> str:  # never print the connection string
        return f"TelemetryConfig(service_name={self.service_name!r}, aad={self.aad})"


def _pairs(value: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise TelemetryConfigError(
                f"{name} must be 'Key=value' pairs separated by ';' (e.g. Authorization=AAD)"
            )
        out[key.strip().lower()] = val.strip()
    return out


def config_from_environ(environ: Mapping[str, str]) -> TelemetryConfig | None:
    """The telemetry settings, or None when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is unset."""
    connection_string = environ.get(CONNECTION_STRING_ENV, "").strip()
    if not connection_string:
        return None
    parts = _pairs(connection_string, CONNECTION_STRING_ENV)
    if not parts.get("instrumentationkey"):
        raise TelemetryConfigError(
            f"{CONNECTION_STRING_ENV} has no InstrumentationKey; use the Application Insights "
            "resource's connection string (InstrumentationKey=...;IngestionEndpoint=...)"
        )
    aad = False
    client_id = None
    auth = environ.get(AUTH_STRING_ENV, "").strip()
    if auth:
        auth_parts = _pairs(auth, AUTH_STRING_ENV)
        if auth_parts.get("authorization", "").upper() != "AAD":
            raise TelemetryConfigError(
                f"{AUTH_STRING_ENV} must be 'Authorization=AAD' (optionally ';ClientId=<client id>')"
            )
        aad = True
        client_id = auth_parts.get("clientid") or None
    service_name = environ.get(SERVICE_NAME_ENV, "").strip() or DEFAULT_SERVICE_NAME
    return TelemetryConfig(connection_string, service_name, aad, client_id)


class _Redact(logging.Filter):
    """Masks the connection string and its parts in any log line (e.g. the SDK's errors)."""

    def __init__(self, config: TelemetryConfig) -> None:
        super().__init__()
        values = [config.connection_string] + [
            v for v in _pairs(config.connection_string, CONNECTION_STRING_ENV).values() if len(v) >= 8
        ]
        self.values = sorted(set(values), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        if any(v in message for v in self.values):
            for value in self.values:
                message = message.replace(value, "***")
            record.msg, record.args = message, None
        return True


class RequestTelemetry:
    """One worker's span pipeline: ``record`` per request, ``shutdown`` when the worker stops."""

    def __init__(self, config: TelemetryConfig) -> None:
        for name, value in _QUIET_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # lazy imports: nothing of OpenTelemetry is loaded when telemetry is off
        from azure.core.pipeline.policies import RetryPolicy
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._kind = SpanKind.SERVER
        self._root = Context()  # no parent: an incoming or ambient trace never samples a request out
        self._error = Status(StatusCode.ERROR)
        redact = _Redact(config)
        for handler in logging.getLogger().handlers:
            handler.addFilter(redact)
        logging.getLogger("azure").setLevel(logging.WARNING)  # no per-export request logs
        credential: Any = None
        if config.aad:
            from azure.identity import ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=config.client_id)
        self._provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
        exporter = AzureMonitorTraceExporter(
            connection_string=config.connection_string,
            tracer_provider=self._provider,  # ours, not the global one: the flow engine has its own
            credential=credential,
            disable_offline_storage=True,
            timeout=NETWORK_TIMEOUT_S,
            read_timeout=NETWORK_TIMEOUT_S,
            retry_policy=RetryPolicy(
                retry_total=RETRIES,
                retry_backoff_factor=0.5,
                retry_backoff_max=2,
                timeout=3 * NETWORK_TIMEOUT_S,
            ),
        )
        # schedule delay and batch size follow OTEL_BSP_* when set; the queue is always bounded
        self._provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=MAX_QUEUE))
        self._tracer = self._provider.get_tracer("genaiops.serving")

    def record(
        self, method: str, route: str, status: int, start_ns: int, end_ns: int, host: str = ""
    ) -> None:
        """One SERVER span for a finished request; never raises."""
        try:
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "http.route": route,
                "url.scheme": "http",
                "url.path": route,
                "http.response.status_code": status,
            }
            if host:
                attributes["server.address"] = host
            span = self._tracer.start_span(
                f"{method} {route}",
                context=self._root,
                kind=self._kind,
                attributes=attributes,
                start_time=start_ns,
            )
            if status >= 500 or status == 0:  # 0: the request ended before an answer was sent
                span.set_status(self._error)
            span.end(end_time=end_ns)
        except Exception as exc:  # telemetry must never fail a request
            log.debug("telemetry: cannot record a request: %s", type(exc).__name__)

    def shutdown(self, timeout_s: float) -> None:
        """Flush what is queued and stop, waiting at most ``timeout_s``."""

        def run() -> None:
            try:
                self._provider.force_flush(timeout_millis=int(timeout_s * 1000))
                self._provider.shutdown()
            except Exception as exc:  # stopping anyway
                log.warning("telemetry: flush failed: %s", type(exc).__name__)

        worker = threading.Thread(target=run, name="telemetry-flush", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            log.warning("telemetry: not flushed within %.1f s; queued requests are dropped", timeout_s)


def start(config: TelemetryConfig | None) -> RequestTelemetry | None:
    """A worker's telemetry (call it after fork: it starts a thread), or None when it is off."""
    if config is None:
        return None
    try:
        telemetry = RequestTelemetry(config)
    except Exception as exc:  # serve without telemetry rather than not at all
        log.error("telemetry: cannot start the Application Insights exporter: %s", type(exc).__name__)
        return None
    log.info("worker %d: sending request telemetry as %s", os.getpid(), config.service_name)
    return telemetry
