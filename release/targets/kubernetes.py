"""Kubernetes online endpoint on the AKS cluster attached to the workspace (azure-ai-ml).

The cluster is attached by infra as a Kubernetes compute (``compute_name``); endpoints and
deployments then work as on managed compute, with the instance type defined on the cluster.
Kubernetes deployments support Application Insights; the model data collector is a managed
compute feature, so request/response logging goes through Application Insights here.
"""

from __future__ import annotations

from azure.ai.ml.entities import (
    Environment,
    KubernetesOnlineDeployment,
    KubernetesOnlineEndpoint,
    OnlineRequestSettings,
)

from release.azure.online import AUTH_MODES, SECRET_STORE_ACCESS, AzureMLOnlineTarget
from release.config import KubernetesTarget as KubernetesSettings
from release.targets.base import DeploymentSpec


class KubernetesTarget(AzureMLOnlineTarget):
    compute_type = "kubernetes"
    settings: KubernetesSettings

    def new_endpoint(self) -> KubernetesOnlineEndpoint:
        return KubernetesOnlineEndpoint(
            name=self.endpoint,
            compute=self.settings.compute_name,
            auth_mode=AUTH_MODES[self.settings.auth_mode],
            identity=self.identity(),
            tags={"genaiops.flow": self.flow, "genaiops.environment": self.cfg.environment},
            properties=dict(SECRET_STORE_ACCESS),
        )

    def new_deployment(
        self, spec: DeploymentSpec, environment: Environment, env: dict[str, str]
    ) -> KubernetesOnlineDeployment:
        return KubernetesOnlineDeployment(
            name=spec.name,
            endpoint_name=self.endpoint,
            environment=environment,
            environment_variables=env,
            instance_type=self.settings.instance_type,
            instance_count=max(spec.instance_count, self.settings.instance_count),
            app_insights_enabled=True,
            request_settings=OnlineRequestSettings(request_timeout_ms=60000),
        )
