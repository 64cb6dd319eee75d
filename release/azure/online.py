"""Azure ML online endpoints (managed and Kubernetes) as a :class:`~release.targets.base.Target`.

One implementation for both compute types; :mod:`release.targets.managed` and
:mod:`release.targets.kubernetes` only say which endpoint and deployment entities to build.

The flow image runs as a custom container (``/score`` and ``/health`` on 8080) with the prompt
flow serving variables the platform expects (``PROMPTFLOW_RUN_MODE=serving``,
``PRT_CONFIG_OVERRIDE=deployment.subscription_id=...``). Connections are read by the deployment's
managed identity from the workspace; no secret value ever goes into a request body.
Order matters on Azure: endpoint, then deployment (at 0 %), then traffic (which may only name
existing deployments); traffic maps are validated before any request.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.entities import (
    Environment,
    IdentityConfiguration,
    OnlineDeployment,
    OnlineEndpoint,
)

from release.azure import names
from release.azure.clients import ML_SCOPE, AzureContext, find, must, wait_lro
from release.azure.telemetry import RequestTelemetry
from release.config import EnvironmentConfig
from release.errors import UserError
from release.targets.base import DeploymentInfo, DeploymentSpec, Target, TrafficMetrics, validate_traffic

log = logging.getLogger(__name__)

SERVING_PORT = 8080
IMAGE_TAG = "genaiops.image"
FLOW_TAG = "genaiops.flow"
AUTH_MODES = {"aad_token": "aad_token", "aml_token": "aml_token", "key": "key"}
ENDPOINT_TIMEOUT_S = 1200.0
TRAFFIC_TIMEOUT_S = 600.0
DELETE_TIMEOUT_S = 900.0
CONNECTION_REF_PREFIX = "azureml://connections/"
# lets the endpoint's system identity read workspace connections for secret injection
SECRET_STORE_ACCESS = {"enforce_access_to_default_secret_stores": "enabled"}


def inference_config() -> dict[str, Any]:
    route = {"path": "/health", "port": SERVING_PORT}
    return {
        "liveness_route": route,
        "readiness_route": route,
        "scoring_route": {"path": "/score", "port": SERVING_PORT},
    }


def check_image(image: str) -> str:
    if "@sha256:" not in image:
        raise UserError(
            f"image {image!r} is not pinned by digest; deploy <registry>/<repo>@sha256:... "
            "(the digest that was pushed and promoted)"
        )
    return image


def state_name(value: object) -> str:
    """``Succeeded`` from an SDK enum, a string or nothing (ARM omits it once settled)."""
    if value is None:
        return "Succeeded"
    return str(getattr(value, "value", value))


class AzureMLOnlineTarget(Target):
    """An Azure ML online endpoint of one flow; deployments are releases of the flow image."""

    compute_type: str = ""
    measures_traffic = True  # Application Insights AppRequests, role name = deployment

    def __init__(self, cfg: EnvironmentConfig, flow: str, ctx: AzureContext | None = None) -> None:
        if flow not in cfg.flows:
            raise UserError(
                f"config/{cfg.environment}.yaml: flows: no flow {flow!r}; known: {sorted(cfg.flows)}"
            )
        self.cfg = cfg
        self.flow = flow
        self.settings: Any = cfg.flows[flow].deployment
        self.ctx = ctx or AzureContext.from_config(cfg)
        self.endpoint = cfg.endpoint_name(flow)
        self._ml: MLClient | None = None
        self.telemetry: RequestTelemetry | None = None  # built on first use (canary metrics)

    @property
    def ml(self) -> MLClient:
        if self._ml is None:
            self._ml = self.ctx.ml_client()
        return self._ml

    # -- what differs between managed and Kubernetes ------------------------------
    @abstractmethod
    def new_endpoint(self) -> OnlineEndpoint: ...

    @abstractmethod
    def new_deployment(
        self, spec: DeploymentSpec, environment: Environment, env: dict[str, str]
    ) -> OnlineDeployment: ...

    # -- Target -------------------------------------------------------------------
    def identity(self) -> IdentityConfiguration:
        return IdentityConfiguration(type="system_assigned")

    def _get_endpoint(self) -> OnlineEndpoint | None:
        return find(
            f"get online endpoint {self.endpoint}", lambda: self.ml.online_endpoints.get(self.endpoint)
        )

    def ensure_endpoint(self) -> None:
        if self._get_endpoint() is not None:
            return
        log.info("creating online endpoint %s", self.endpoint)
        poller = must(
            f"create online endpoint {self.endpoint}",
            lambda: self.ml.online_endpoints.begin_create_or_update(self.new_endpoint()),
        )
        wait_lro(poller, f"online endpoint {self.endpoint}", ENDPOINT_TIMEOUT_S)

    def serving_env(self, spec: DeploymentSpec) -> dict[str, str]:
        override = ",".join(
            [
                f"deployment.subscription_id={self.ctx.subscription_id}",
                f"deployment.resource_group={self.ctx.resource_group}",
                f"deployment.workspace_name={self.ctx.workspace}",
                f"deployment.endpoint_name={self.endpoint}",
                f"deployment.deployment_name={spec.name}",
            ]
        )
        env = dict(spec.env)
        env.update({"PROMPTFLOW_RUN_MODE": "serving", "PRT_CONFIG_OVERRIDE": override})
        env["OTEL_SERVICE_NAME"] = spec.name  # telemetry's cloud role name = the deployment
        # request telemetry for the canary checks (review M1): without it AppRequests stays empty
        if self.telemetry is None:
            self.telemetry = RequestTelemetry(self.ctx, self.cfg)
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = self.telemetry.connection_string()
        env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = "Authorization=AAD"
        env.update(self.secret_references(spec))
        return env

    def secret_references(self, spec: DeploymentSpec) -> dict[str, str]:
        """Each secret variable as an Azure ML secret-injection reference to the workspace
        connection that holds it (``${{azureml://connections/<name>/credentials/key}}``): the
        platform resolves it with the endpoint identity at start-up. Never a value here."""
        by_ref: dict[str, str] = {}
        for connection in self.cfg.connections:
            secret = connection.secret
            if secret is not None:
                ref = str(getattr(secret, "env", None) or getattr(secret, "key_vault_secret", ""))
                by_ref[ref] = connection.name
        out = {}
        for var, ref in spec.secret_env.items():
            if ref.startswith(CONNECTION_REF_PREFIX):
                name = ref[len(CONNECTION_REF_PREFIX) :].split("/")[0]
            elif ref in by_ref:
                name = by_ref[ref]
            else:
                raise UserError(
                    f"secret {var}: {ref!r} is not the secret of a connection in "
                    f"config/{self.cfg.environment}.yaml (connections[].secret); add the connection "
                    "so the endpoint reads its key from the workspace connection"
                )
            out[var] = "${{" + f"{CONNECTION_REF_PREFIX}{name}/credentials/key" + "}}"
        return out

    def create_or_update(self, spec: DeploymentSpec, timeout_s: float) -> DeploymentInfo:
        names.check_ml_deployment_name(spec.name)
        check_image(spec.image)
        self.secret_references(spec)  # refuse unknown secrets before any request
        if spec.flow != self.flow:
            raise UserError(f"deployment spec is for flow {spec.flow!r}, this endpoint serves {self.flow!r}")
        environment = Environment(image=spec.image, inference_config=inference_config())
        deployment = self.new_deployment(spec, environment, self.serving_env(spec))
        deployment.tags = {**spec.labels, IMAGE_TAG: spec.image, FLOW_TAG: self.flow}
        log.info("deploying %s to %s/%s", spec.image, self.endpoint, spec.name)
        poller = must(
            f"create deployment {self.endpoint}/{spec.name}",
            lambda: self.ml.online_deployments.begin_create_or_update(
                deployment, skip_script_validation=True
            ),
        )
        result = wait_lro(poller, f"deployment {self.endpoint}/{spec.name}", timeout_s)
        state = state_name(getattr(result, "provisioning_state", None))
        if state.lower() != "succeeded":
            raise UserError(f"deployment {self.endpoint}/{spec.name} ended in state {state}")
        return DeploymentInfo(
            spec.name, spec.image, "Succeeded", self.get_traffic().get(spec.name, 0), spec.labels
        )

    def list_deployments(self) -> list[DeploymentInfo]:
        traffic = self.get_traffic()
        found = must(
            f"list deployments of {self.endpoint}",
            lambda: list(self.ml.online_deployments.list(self.endpoint)),
        )
        out = []
        for d in found:
            tags = dict(d.tags or {})
            image = tags.pop(IMAGE_TAG, "")
            tags.pop(FLOW_TAG, None)
            state = state_name(d.provisioning_state)
            out.append(DeploymentInfo(d.name, image, state, int(traffic.get(d.name, 0)), tags))
        return sorted(out, key=lambda i: i.name)

    def get_traffic(self) -> dict[str, int]:
        endpoint = self._get_endpoint()
        if endpoint is None:
            return {}
        return {k: int(v) for k, v in (endpoint.traffic or {}).items() if int(v) > 0}

    def set_traffic(self, traffic: dict[str, int]) -> None:
        known = {d.name for d in self.list_deployments()}
        wanted = validate_traffic(traffic, known)
        endpoint = self._get_endpoint()
        if endpoint is None:
            raise UserError(f"online endpoint {self.endpoint} does not exist; deploy first")
        # every known deployment is named, so a share that drops to 0 is really removed
        endpoint.traffic = {name: wanted.get(name, 0) for name in sorted(known)}
        log.info("traffic on %s: %s", self.endpoint, wanted)
        poller = must(
            f"set traffic on {self.endpoint}",
            lambda: self.ml.online_endpoints.begin_create_or_update(endpoint),
        )
        wait_lro(poller, f"traffic update on {self.endpoint}", TRAFFIC_TIMEOUT_S)

    def scoring_url(self, deployment: str | None = None) -> str:
        endpoint = self._get_endpoint()
        if endpoint is None or not endpoint.scoring_uri:
            raise UserError(f"online endpoint {self.endpoint} has no scoring URL yet; deploy first")
        return str(endpoint.scoring_uri)

    def auth_headers(self, deployment: str | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if deployment is not None:
            headers["azureml-model-deployment"] = deployment  # route to one deployment directly
        mode = self.settings.auth_mode
        if mode == "aad_token":
            headers["Authorization"] = f"Bearer {self.ctx.token(ML_SCOPE)}"
        else:
            keys = must(
                f"get credentials of {self.endpoint}",
                lambda: self.ml.online_endpoints.get_keys(self.endpoint),
            )
            secret = getattr(keys, "primary_key", None) or getattr(keys, "access_token", None)
            if not secret:
                raise UserError(f"online endpoint {self.endpoint} returned no {mode} credential")
            headers["Authorization"] = f"Bearer {secret}"
        return headers

    def delete(self, deployment: str) -> None:
        if self.get_traffic().get(deployment, 0) > 0:
            raise UserError(
                f"deployment {self.endpoint}/{deployment} still receives traffic; move traffic away first"
            )
        poller = find(
            f"delete deployment {self.endpoint}/{deployment}",
            lambda: self.ml.online_deployments.begin_delete(name=deployment, endpoint_name=self.endpoint),
        )
        if poller is None:
            return
        wait_lro(poller, f"delete {self.endpoint}/{deployment}", DELETE_TIMEOUT_S)

    def traffic_metrics(self, since: float) -> dict[str, TrafficMetrics]:
        """Real traffic per deployment from the environment's Application Insights
        (:mod:`release.azure.telemetry`)."""
        if self.telemetry is None:
            self.telemetry = RequestTelemetry(self.ctx, self.cfg)
        return self.telemetry.metrics("azureml", lambda: [d.name for d in self.list_deployments()], since)
