"""The one place that builds Azure credentials and SDK clients from the environment config.

Authentication is an Azure identity, never a key: :class:`azure.identity.DefaultAzureCredential`
picks workload identity federation in CI (``AZURE_FEDERATED_TOKEN_FILE``), a managed identity
on Azure, or the developer's ``az login``. Interactive browser sign-in is disabled.

:class:`AzureContext` is the seam: every client is built through it, and a test passes an
azure-core ``transport`` (for example ``RequestsTransport`` over a session whose adapter answers
like ARM) to see the exact REST requests the official SDKs send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.core.polling import LROPoller
from azure.core.rest import HttpRequest, HttpResponse

from release.azure import names
from release.config import EnvironmentConfig, require_deployable
from release.errors import CheckFailed, UserError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.mgmt.web import WebSiteManagementClient

log = logging.getLogger(__name__)

ARM_SCOPE = "https://management.azure.com/.default"
ML_SCOPE = "https://ml.azure.com/.default"

T = TypeVar("T")


class AzureCallError(UserError):
    """An Azure call failed; the message names the operation and Azure's error (no secrets)."""


def default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


@dataclass
class AzureContext:
    """Subscription, resource group, workspace, credential and transport for one environment."""

    subscription_id: str
    tenant_id: str
    resource_group: str
    workspace: str
    location: str
    credential: TokenCredential
    environment: str = ""
    transport: HttpTransport | None = None  # test seam: None = the SDK's default HTTP transport
    request_timeout_s: float = 60.0  # connection and read timeout of every request

    @classmethod
    def from_config(
        cls,
        cfg: EnvironmentConfig,
        credential: TokenCredential | None = None,
        transport: HttpTransport | None = None,
    ) -> AzureContext:
        names.base(cfg)  # raises a clear error for kind: local
        if credential is None and transport is None:  # the real Azure: no example/placeholder values
            require_deployable(cfg, "talk to Azure")
        assert cfg.azure is not None
        return cls(
            subscription_id=cfg.azure.subscription_id,
            tenant_id=cfg.azure.tenant_id,
            resource_group=cfg.resource_group_name,
            workspace=names.workspace(cfg),
            location=cfg.azure.location,
            credential=credential or default_credential(),
            environment=cfg.environment,
            transport=transport,
        )

    # -- SDK clients --------------------------------------------------------------------
    def sdk_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "connection_timeout": self.request_timeout_s,
            "read_timeout": self.request_timeout_s,
            "retry_total": 3,  # bounded retries on throttling and transient errors
        }
        if self.transport is not None:
            kwargs["transport"] = self.transport
        return kwargs

    def ml_client(self) -> MLClient:
        from azure.ai.ml import MLClient

        return MLClient(
            self.credential,
            subscription_id=self.subscription_id,
            resource_group_name=self.resource_group,
            workspace_name=self.workspace,
            enable_telemetry=False,
            show_progress=False,
            **self.sdk_kwargs(),
        )

    def web_client(self) -> WebSiteManagementClient:
        from azure.mgmt.web import WebSiteManagementClient

        return WebSiteManagementClient(self.credential, self.subscription_id, **self.sdk_kwargs())

    def token(self, scope: str) -> str:
        return self.credential.get_token(scope, tenant_id=self.tenant_id).token

    # -- plain HTTP through the same transport (App Service warm-up) ---------------------
    def http(self, request: HttpRequest) -> HttpResponse:
        transport = self.transport or RequestsTransport()
        pipeline: Pipeline[Any, Any] = Pipeline(transport=transport, policies=[RetryPolicy(retry_total=2)])
        response: HttpResponse = pipeline.run(
            request, connection_timeout=self.request_timeout_s, read_timeout=self.request_timeout_s
        ).http_response
        response.read()
        return response


def wait_lro(poller: LROPoller[T], what: str, timeout_s: float) -> T:
    """Wait for a long-running operation, at most ``timeout_s``; a clear error when it does not end."""
    try:
        result = poller.result(timeout=timeout_s)
    except HttpResponseError as exc:
        raise AzureCallError(f"{what}: {describe(exc)}") from None
    if not poller.done():
        raise CheckFailed(
            f"{what}: not finished after {timeout_s:.0f} s (status {poller.status()}); "
            "check it in the Azure portal and re-run: the command continues from where it stopped"
        )
    return result


def call(what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call, turning Azure errors into one clear line (404 stays ResourceNotFoundError
    for :func:`find`)."""
    try:
        return fn()
    except ResourceNotFoundError:
        raise
    except AzureError as exc:
        raise AzureCallError(f"{what}: {describe(exc)}") from None


def find(what: str, fn: Callable[[], T]) -> T | None:
    """Run one SDK read; None when the resource does not exist."""
    try:
        return call(what, fn)
    except ResourceNotFoundError:
        return None


def must(what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call where a 404 means a missing parent (workspace, web app): a clear error."""
    try:
        return call(what, fn)
    except ResourceNotFoundError as exc:
        raise AzureCallError(
            f"{what}: {describe(exc)}; is the environment's infrastructure deployed "
            "(make plan ENV=..., then make apply ENV=...)?"
        ) from None


def describe(exc: AzureError) -> str:
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        return (
            "no Azure credentials: run `az login`, or set AZURE_CLIENT_ID and AZURE_TENANT_ID with "
            "AZURE_FEDERATED_TOKEN_FILE (workload identity) as the pipelines do"
        )
    if isinstance(exc, HttpResponseError):
        code = getattr(exc.error, "code", None) if exc.error else None
        status = exc.status_code
        message = (exc.error.message if exc.error else None) or exc.reason or str(exc).splitlines()[0]
        return f"HTTP {status} {code or ''} {message}".replace("  ", " ").strip()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def poll_until(check: Callable[[], bool], what: str, timeout_s: float, interval_s: float = 5.0) -> None:
    """Call ``check`` until it returns True, at most ``timeout_s`` (a bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
