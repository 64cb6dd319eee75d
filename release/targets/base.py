"""The one interface every deployment target implements (local, managed, kubernetes, appservice).

Strategies (blue/green, A/B) are written once against :class:`Target`; a target knows how to
create a deployment, move traffic and tell where to send requests, nothing about strategy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from release.errors import UserError


@dataclass(frozen=True)
class DeploymentSpec:
    """What to deploy. ``secret_env`` maps env var names to secret references, never values."""

    flow: str
    name: str  # unique per release, e.g. "wc-r20261124t031200-3fa2"
    image: str  # full reference, pinned by digest (registry/repo@sha256:...)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)  # VAR -> reference (env name / KV secret)
    instance_count: int = 1
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentInfo:
    name: str
    image: str
    state: str  # "Succeeded" | "Creating" | "Updating" | "Failed" | "Deleting"
    traffic: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrafficMetrics:
    """What real traffic did on one deployment in a window (from the router log or telemetry)."""

    requests: int
    errors: int
    p99_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class TrafficError(UserError):
    """A traffic map is invalid; nothing was changed."""


def validate_traffic(traffic: dict[str, int], known: set[str]) -> dict[str, int]:
    """A traffic map must name only known deployments, hold 0..100 each and sum to 100."""
    unknown = sorted(set(traffic) - known)
    if unknown:
        raise TrafficError(f"traffic names unknown deployment(s) {unknown}; known: {sorted(known)}")
    bad = {k: v for k, v in traffic.items() if not 0 <= v <= 100}
    if bad:
        raise TrafficError(f"traffic shares must be between 0 and 100: {bad}")
    total = sum(traffic.values())
    if total != 100:
        raise TrafficError(f"traffic must sum to 100, got {total}: {traffic}")
    return dict(traffic)


class Target(ABC):
    """One endpoint of one flow in one environment."""

    flow: str
    # False where deployments live in slots that infra owns (App Service): rollback then leaves
    # the rolled-back release in its slot instead of deleting it.
    removes_deployments: bool = True
    # True where traffic_metrics() reads a real source (router log, Application Insights): a
    # deployment missing from its answer then served 0 requests.
    measures_traffic: bool = False

    @abstractmethod
    def ensure_endpoint(self) -> None:
        """Create the endpoint (router, online endpoint, web app) if missing; idempotent."""

    @abstractmethod
    def create_or_update(self, spec: DeploymentSpec, timeout_s: float) -> DeploymentInfo:
        """Create the deployment at 0 % traffic and wait (bounded) until it is provisioned."""

    @abstractmethod
    def list_deployments(self) -> list[DeploymentInfo]: ...

    @abstractmethod
    def get_traffic(self) -> dict[str, int]: ...

    @abstractmethod
    def set_traffic(self, traffic: dict[str, int]) -> None:
        """Validate with :func:`validate_traffic` first, then apply atomically."""

    @abstractmethod
    def scoring_url(self, deployment: str | None = None) -> str:
        """The endpoint's URL (routed by traffic), or one deployment's URL when named."""

    @abstractmethod
    def auth_headers(self, deployment: str | None = None) -> dict[str, str]:
        """Headers a client needs (token or key); empty for the local target."""

    @abstractmethod
    def delete(self, deployment: str) -> None: ...

    def probe_route(self, deployment: str) -> tuple[str, dict[str, str], bool]:
        """Where probe requests for ``deployment`` go so that its traffic metrics count them:
        ``(url, headers, pinned)``; ``pinned`` is False when the route shares traffic by weight
        (then probes continue until the metrics show enough or the probe budget is spent)."""
        return self.scoring_url(deployment), self.auth_headers(deployment), True

    def traffic_metrics(self, since: float) -> dict[str, TrafficMetrics]:
        """Per-deployment metrics of real traffic since a UNIX time; targets without a source
        return an empty dict and strategies then rely on smoke tests alone."""
        return {}
