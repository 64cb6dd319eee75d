"""Attach an existing AKS cluster to the workspace as Kubernetes compute.

Default: the Azure ML cluster extension plus an azapi ``computes`` resource of type
``Kubernetes``. Only when the config sets ``legacy_inference_cluster: true``: the legacy
``azurerm_machine_learning_inference_cluster`` instead (AKS v1 attach, being retired).

TLS of the extension's inference router
(https://learn.microsoft.com/azure/machine-learning/how-to-deploy-kubernetes-extension):
- ``ssl_cname`` + ``ssl_secret`` set: HTTPS (``allowInsecureConnections=False``, ``sslCname``,
  ``sslSecret`` = a Kubernetes secret holding cert.pem/key.pem in the extension's namespace);
- neither: HTTP on an internal load balancer only (``allowInsecureConnections=True``), reachable
  inside the VNet only; infra/validate.py allows that for the private profile only.
Image pull: the compute's system identity (``principal_id``) gets AcrPull on the registry
(infra/components/access.py), as asked by
https://learn.microsoft.com/azure/machine-learning/how-to-attach-kubernetes-to-workspace
The identity running terraform needs Kubernetes Extension Contributor (or Contributor) on the
AKS cluster, which usually lives in another resource group (docs/first-deployment.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from cdktf_cdktf_provider_azurerm.kubernetes_cluster_extension import KubernetesClusterExtension
from cdktf_cdktf_provider_azurerm.machine_learning_inference_cluster import (
    MachineLearningInferenceCluster,
)
from constructs import Construct

from infra.azapi import AzapiProvider, AzapiResource
from release.config import KubernetesTarget

COMPUTE_TYPE = "Microsoft.MachineLearningServices/workspaces/computes@2024-04-01"


class KubernetesCompute(Construct):
    """Exposes ``compute_id`` and ``compute_name``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: AzapiProvider,
        target: KubernetesTarget,
        workspace_id: str,
        location: str,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.compute_name = target.compute_name
        self.principal_id: str | None = None
        self.extension: KubernetesClusterExtension | None = None
        self.legacy: MachineLearningInferenceCluster | None = None
        if target.legacy_inference_cluster:
            self.legacy = MachineLearningInferenceCluster(
                self,
                "inference_cluster",
                name=target.compute_name,
                kubernetes_cluster_id=target.aks_cluster_id,
                machine_learning_workspace_id=workspace_id,
                location=location,
                cluster_purpose="FastProd",
                tags=dict(tags or {}),
            )
            self.compute_id = self.legacy.id
            return
        self.extension = KubernetesClusterExtension(
            self,
            "azureml_extension",
            name="azureml",
            cluster_id=target.aks_cluster_id,
            extension_type="Microsoft.AzureML.Kubernetes",
            release_train="stable",
            release_namespace=target.namespace,
            configuration_settings={
                "enableTraining": "False",
                "enableInference": "True",
                "inferenceRouterServiceType": "LoadBalancer",
                "internalLoadBalancerProvider": "azure",  # private IP only
                "inferenceRouterHA": "True",
                **tls_settings(target),
            },
        )
        self.compute = AzapiResource(
            self,
            "compute",
            provider=provider,
            type=COMPUTE_TYPE,
            name=target.compute_name,
            parent_id=workspace_id,
            location=location,
            identity="SystemAssigned",
            body={
                "properties": {
                    "computeType": "Kubernetes",
                    "resourceId": target.aks_cluster_id,
                    "disableLocalAuth": True,
                    "description": "AKS attached for prompt flow online endpoints (genaiops)",
                    "properties": {
                        "namespace": target.namespace,
                        "defaultInstanceType": target.instance_type,
                    },
                }
            },
            depends_on=[self.extension],
        )
        self.compute_id = self.compute.resource_id
        self.principal_id = self.compute.principal_id


def tls_settings(target: KubernetesTarget) -> dict[str, str]:
    """The extension's TLS configuration settings for ``target`` (see the module docstring)."""
    if target.ssl_cname and target.ssl_secret:
        return {
            "allowInsecureConnections": "False",
            "sslCname": target.ssl_cname,
            "sslSecret": target.ssl_secret,
        }
    return {"allowInsecureConnections": "True"}
