"""The Azure ML compute cluster that runs experiments in the workspace (``--run-in workspace``).

``release/engine/azure_runs.py`` submits each experiment job as a pipeline job whose prompt
flow parallel component runs on the cluster named ``workspace.batch_compute``. The cluster:
- scales to zero nodes when idle (``min_node_count: 0``, idle scale-down after a few minutes);
- has a system-assigned identity (its roles are granted by :class:`infra.components.access.Access`:
  AcrPull, Storage Blob Data Contributor, Connection Secrets Reader, Metrics Writer);
- allows no local (key) auth, no SSH and, inside the workspace's managed network, no public IP.
"""

from __future__ import annotations

from collections.abc import Mapping

from cdktf_cdktf_provider_azurerm.machine_learning_compute_cluster import (
    MachineLearningComputeCluster,
    MachineLearningComputeClusterIdentity,
    MachineLearningComputeClusterScaleSettings,
    MachineLearningComputeClusterTimeouts,
)
from constructs import Construct

# The first compute of a managed-network workspace can take ~30 min (it provisions the network);
# the workspace provisions it on creation, and this timeout leaves room anyway (azurerm's default
# create timeout is 30 min): https://learn.microsoft.com/azure/machine-learning/how-to-managed-network
CREATE_TIMEOUT = "60m"
IDLE_BEFORE_SCALE_DOWN = "PT5M"  # ISO 8601; nodes stay warm 5 min between jobs, then go away


class BatchCompute(Construct):
    """Exposes ``cluster``, ``compute_id`` and ``principal_id`` (the cluster's identity)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        name: str,
        workspace_id: str,
        location: str,
        vm_size: str,
        max_nodes: int,
        managed_network: bool,
        subnet_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.cluster = MachineLearningComputeCluster(
            self,
            "cluster",
            name=name,
            machine_learning_workspace_id=workspace_id,
            location=location,
            vm_size=vm_size,
            vm_priority="Dedicated",
            scale_settings=MachineLearningComputeClusterScaleSettings(
                min_node_count=0,
                max_node_count=max_nodes,
                scale_down_nodes_after_idle_duration=IDLE_BEFORE_SCALE_DOWN,
            ),
            identity=MachineLearningComputeClusterIdentity(type="SystemAssigned"),
            local_auth_enabled=False,
            ssh_public_access_enabled=False,
            # Without a public IP a node needs the workspace's managed network or a subnet of
            # ours (azurerm >= 4.18.0 accepts it without a subnet, #28673); with neither, Azure
            # needs the public IP for the batch service to reach the node.
            node_public_ip_enabled=not (managed_network or subnet_id),
            subnet_resource_id=subnet_id,
            timeouts=MachineLearningComputeClusterTimeouts(create=CREATE_TIMEOUT),
            description="genaiops: prompt flow batch runs (run_in: workspace); scales to zero",
            tags=dict(tags or {}),
        )
        self.name = name
        self.compute_id = self.cluster.id
        self.principal_id = self.cluster.identity.principal_id
