"""Azure ML managed online endpoint and deployments (azure-ai-ml), one flow per endpoint.

The workspace managed network governs egress (the legacy per-deployment egress flag is not set).
Managed compute supports Application Insights and the model data collector, so every
deployment sends telemetry to the workspace's Application Insights and collects requests and
responses (``model_inputs`` / ``model_outputs``) to the workspace datastore.
"""

from __future__ import annotations

from azure.ai.ml.entities import (
    DataCollector,
    DeploymentCollection,
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    OnlineRequestSettings,
)

from release.azure.online import AUTH_MODES, SECRET_STORE_ACCESS, AzureMLOnlineTarget
from release.config import ManagedTarget as ManagedSettings
from release.targets.base import DeploymentSpec


class ManagedTarget(AzureMLOnlineTarget):
    compute_type = "managed"
    settings: ManagedSettings

    def new_endpoint(self) -> ManagedOnlineEndpoint:
        return ManagedOnlineEndpoint(
            name=self.endpoint,
            auth_mode=AUTH_MODES[self.settings.auth_mode],
            identity=self.identity(),
            public_network_access="enabled" if self.settings.public_network_access else "disabled",
            tags={"genaiops.flow": self.flow, "genaiops.environment": self.cfg.environment},
            properties=dict(SECRET_STORE_ACCESS),
        )

    def new_deployment(
        self, spec: DeploymentSpec, environment: Environment, env: dict[str, str]
    ) -> ManagedOnlineDeployment:
        collector = None
        if self.settings.data_collection:
            collector = DataCollector(
                collections={
                    "model_inputs": DeploymentCollection(enabled="true"),
                    "model_outputs": DeploymentCollection(enabled="true"),
                }
            )
        return ManagedOnlineDeployment(
            name=spec.name,
            endpoint_name=self.endpoint,
            environment=environment,
            environment_variables=env,
            instance_type=self.settings.instance_type,
            instance_count=max(spec.instance_count, self.settings.instance_count),
            app_insights_enabled=True,
            data_collector=collector,
            request_settings=OnlineRequestSettings(
                request_timeout_ms=self.settings.request_timeout_ms,
                max_concurrent_requests_per_instance=self.settings.max_concurrent_requests_per_instance,
            ),
        )
