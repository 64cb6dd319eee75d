"""The ``local`` target: flow containers on the local Docker engine behind the local nginx router.

Each deployment is one container (``--network host``) serving on its own free 127.0.0.1 port,
labelled with its flow, deployment name and port, so the engine itself is the inventory: no
second list to drift. Traffic lives in the router (``Router.set_routes``), which also reads
per-deployment metrics from its JSON access log for the canary checks.

Secret values (connection keys) are resolved from this machine's environment when a container
starts and passed to it as environment variables; they are never in the image, the labels or
the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import docker
import docker.errors
import requests
from docker.models.containers import Container

from release.errors import CheckFailed, UserError
from release.local_env.net import LOCALHOST, free_port
from release.local_env.router import Router
from release.release_state import CREATED_LABEL
from release.targets.base import (
    DeploymentInfo,
    DeploymentSpec,
    Target,
    TrafficError,
    TrafficMetrics,
    validate_traffic,
)

log = logging.getLogger(__name__)

LABEL_FLOW = "genaiops.flow"
LABEL_DEPLOYMENT = "genaiops.deployment"
LABEL_PORT = "genaiops.port"
LABEL_SCOPE = "genaiops.scope"
HEALTH_POLL_S = 0.25
STOP_TIMEOUT_S = 5


class LocalTarget(Target):
    """One flow's endpoint on this machine: containers plus a route in the nginx router."""

    measures_traffic = True

    def __init__(
        self,
        flow: str,
        *,
        docker_host: str,
        router: Router,
        scope: str = "local",
        workers: int = 2,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.flow = flow
        self.router = router
        self.router_url = router.url
        self.scope = scope  # separates endpoints of different local environments on one engine
        self.workers = workers
        self.environ = environ
        self.client = docker.DockerClient(base_url=docker_host, timeout=60)

    # ------------------------------------------------------------------ inventory
    def _containers(self) -> list[Container]:
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_FLOW}={self.flow}", f"{LABEL_SCOPE}={self.scope}"]}
        )
        return found

    def _container(self, deployment: str) -> Container | None:
        for container in self._containers():
            if container.labels.get(LABEL_DEPLOYMENT) == deployment:
                return container
        return None

    def _port(self, deployment: str) -> int:
        container = self._container(deployment)
        if container is None:
            known = sorted(c.labels.get(LABEL_DEPLOYMENT, "?") for c in self._containers())
            raise UserError(f"flow {self.flow!r} has no deployment {deployment!r}; deployments: {known}")
        return int(container.labels[LABEL_PORT])

    def container_name(self, deployment: str) -> str:
        return f"genaiops-{self.scope}-{self.flow}-{deployment}".replace("_", "-")[:120]

    # ------------------------------------------------------------------ Target
    def ensure_endpoint(self) -> None:
        """The router serves every flow; a flow without deployments simply has no route yet."""

    def create_or_update(self, spec: DeploymentSpec, timeout_s: float) -> DeploymentInfo:
        if spec.flow != self.flow:
            raise UserError(f"deployment spec is for flow {spec.flow!r}, this target serves {self.flow!r}")
        existing = self._container(spec.name)
        if existing is not None:
            existing.reload()
            if existing.labels.get("genaiops.image") == spec.image and existing.status == "running":
                self._wait_healthy(spec.name, existing, int(existing.labels[LABEL_PORT]), timeout_s)
                return self._info(existing, self.get_traffic())
            self._remove(existing)
        port = free_port()
        env = {
            **spec.env,
            **self._secret_values(spec),
            "HOST": LOCALHOST,
            "PORT": str(port),
            "WORKERS": str(self.workers),
        }
        labels = {
            **spec.labels,
            LABEL_FLOW: self.flow,
            LABEL_DEPLOYMENT: spec.name,
            LABEL_PORT: str(port),
            LABEL_SCOPE: self.scope,
            "genaiops.image": spec.image,
        }
        try:
            container = self.client.containers.run(
                spec.image,
                name=self.container_name(spec.name),
                detach=True,
                network_mode="host",
                environment=env,
                labels=labels,
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            )
        except docker.errors.ImageNotFound:
            raise UserError(
                f"image {spec.image} is not in the local engine or registry; build and push it first"
            ) from None
        except docker.errors.APIError as exc:
            raise CheckFailed(
                f"could not start deployment {spec.name} from {spec.image}: {exc.explanation}"
            ) from None
        self._wait_healthy(spec.name, container, port, timeout_s)
        container.reload()
        return self._info(container, self.get_traffic())

    def _secret_values(self, spec: DeploymentSpec) -> dict[str, str]:
        environ = os.environ if self.environ is None else self.environ
        values = {}
        for var, reference in spec.secret_env.items():
            if reference not in environ:
                raise UserError(
                    f"deployment {spec.name}: secret for {var} comes from environment variable "
                    f"{reference}, which is not set; export {reference}=..."
                )
            values[var] = environ[reference]
        return values

    def _wait_healthy(self, deployment: str, container: Container, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{LOCALHOST}:{port}/health"
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise CheckFailed(
                    f"deployment {deployment} stopped during start-up (exit code {code}); "
                    f"see 'docker logs {container.name}'"
                )
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                raise CheckFailed(f"deployment {deployment} did not answer {url} within {timeout_s:.0f} s")
            time.sleep(HEALTH_POLL_S)

    def _info(self, container: Container, traffic: dict[str, int]) -> DeploymentInfo:
        name = container.labels.get(LABEL_DEPLOYMENT, container.name)
        state = {"running": "Succeeded", "created": "Creating", "restarting": "Updating"}.get(
            container.status, "Failed"
        )
        labels = {
            k: v
            for k, v in container.labels.items()
            if not k.startswith("genaiops.") or k in (LABEL_PORT, CREATED_LABEL, "genaiops.release")
        }
        return DeploymentInfo(
            name=name,
            image=container.labels.get("genaiops.image", ""),
            state=state,
            traffic=traffic.get(name, 0),
            labels=labels,
        )

    def list_deployments(self) -> list[DeploymentInfo]:
        traffic = self.get_traffic()
        return sorted((self._info(c, traffic) for c in self._containers()), key=lambda d: d.name)

    def get_traffic(self) -> dict[str, int]:
        routes = self.router.routes().get(self.flow, {})
        return {name: route.weight for name, route in routes.items()}

    def set_traffic(self, traffic: dict[str, int]) -> None:
        containers = {c.labels.get(LABEL_DEPLOYMENT): c for c in self._containers()}
        known = {name for name in containers if name}
        validate_traffic(traffic, known)
        not_running = sorted(
            name for name, share in traffic.items() if share and containers[name].status != "running"
        )
        if not_running:
            raise TrafficError(
                f"traffic names deployment(s) that are not running: {not_running}; nothing changed"
            )
        routes = {
            name: (int(containers[name].labels[LABEL_PORT]), share)
            for name, share in traffic.items()
            if name in containers
        }
        self.router.set_routes(self.flow, routes)

    def scoring_url(self, deployment: str | None = None) -> str:
        if deployment is None:
            return f"{self.router_url}/{self.flow}/score"
        return f"http://{LOCALHOST}:{self._port(deployment)}/score"

    def auth_headers(self, deployment: str | None = None) -> dict[str, str]:
        return {}

    def delete(self, deployment: str) -> None:
        traffic = self.get_traffic()
        if traffic.get(deployment, 0) > 0:
            raise UserError(
                f"deployment {deployment} still receives {traffic[deployment]} % of traffic; "
                "move traffic first"
            )
        if deployment in traffic:
            remaining = {name: share for name, share in traffic.items() if name != deployment}
            routes = self.router.routes().get(self.flow, {})
            self.router.set_routes(
                self.flow,
                {name: (routes[name].host_port, routes[name].weight) for name in remaining if name in routes},
            )
        container = self._container(deployment)
        if container is not None:
            self._remove(container)

    def _remove(self, container: Container) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def traffic_metrics(self, since: float) -> dict[str, TrafficMetrics]:
        return self.router.read_metrics(self.flow, since)

    def probe_route(self, deployment: str) -> tuple[str, dict[str, str], bool]:
        """Probes go through the router (only routed requests are in its log), shared by weight."""
        return self.scoring_url(None), {}, False

    # ------------------------------------------------------------------ local extras
    def health(self, deployment: str) -> str:
        """``healthy`` when its ``/health`` answers 200, else what is wrong."""
        container = self._container(deployment)
        if container is None:
            return "missing"
        if container.status != "running":
            return container.status
        try:
            status = requests.get(
                f"http://{LOCALHOST}:{container.labels[LABEL_PORT]}/health", timeout=2
            ).status_code
        except requests.RequestException as exc:
            return f"unreachable ({type(exc).__name__})"
        return "healthy" if status == 200 else f"HTTP {status}"
