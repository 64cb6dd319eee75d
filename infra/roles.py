"""The one table of Azure built-in roles the stacks grant, with why each is needed.

Rules enforced by :func:`infra.components.access.grant`:
- only roles in :data:`ROLES` can be granted, each to one principal on one resource;
- privileged roles (Owner, Contributor, User Access Administrator, RBAC Administrator) are
  never granted, and nothing is granted at subscription or management-group scope.

Definition ids are the built-in ids, identical in every tenant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    definition_id: str
    why: str


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        # --- identities of endpoints and web apps (run a flow) -------------------------
        Role(
            "AcrPull",
            "7f951dda-4ed3-4680-a7ca-43fe172d538d",
            "web app / slot, batch cluster and attached Kubernetes compute identities pull the "
            "flow or job image (admin user is off); the prod deployer pulls from the dev "
            "registry to promote; endpoint identities get it from Azure ML itself",
        ),
        Role(
            "Storage Blob Data Reader",
            "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
            "readers: experiment data and reports (read only); endpoint identities get it from "
            "Azure ML itself",
        ),
        Role(
            "Azure Machine Learning Workspace Connection Secrets Reader",
            "ea01e6af-a1c1-4350-9563-ad00f8c72ec5",
            "a deployed flow, or a prompt flow parallel job on the batch cluster, resolves its "
            "prompt flow connections (keys) through the workspace; read only",
        ),
        Role(
            "Key Vault Secrets User",
            "4633458b-17de-408a-b874-0445c86b69e6",
            "web app / slot identities resolve their Key Vault references (RBAC vaults); "
            "'Key Vault Reader' cannot read secret values",
        ),
        Role(
            "AzureML Metrics Writer (preview)",
            "635dd51f-9968-44d3-b7fb-6d9a6bd613ae",
            "batch cluster jobs write metrics to the workspace (endpoints get it from Azure ML)",
        ),
        Role(
            "Monitoring Metrics Publisher",
            "3913510d-42f4-4e42-8a64-420c390055eb",
            "web app / slot and endpoint identities send request telemetry to Application "
            "Insights, whose local (key) auth is off, so ingestion needs Entra ID; one component",
        ),
        # --- the deploying service principal (release tooling) -------------------------
        Role(
            "AzureML Data Scientist",
            "f6c7c914-8db3-469d-8ca1-694a8f32e121",
            "deployer: runs, models, online endpoints/deployments in the workspace; "
            "cannot create compute or change the workspace",
        ),
        Role(
            "Log Analytics Reader",
            "73c42c96-874c-492b-b04d-ab87d138a893",
            "deployer: reads the request telemetry of each deployment (error rate, p99) between "
            "canary steps (release/azure/telemetry.py); read only, on the one workspace",
        ),
        Role(
            "AcrPush",
            "8311e382-0749-4cb8-b61a-304f252e45ec",
            "deployer: pushes flow images to the environment's registry (includes pull)",
        ),
        Role(
            "Storage Blob Data Contributor",
            "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
            "deployer: uploads experiment data and reports to workspace storage; batch "
            "cluster: a prompt flow parallel job reads its input rows and writes "
            "parallel_run_step.jsonl outputs on the workspace datastore with its identity",
        ),
        Role(
            "Website Contributor",
            "de139f84-1756-47ae-9be6-808fbbe84772",
            "deployer: sets the image of one web app and its slot and swaps them; scoped to the "
            "app (covers its slots)",
        ),
        # --- readers of experiment results ---------------------------------------------
        Role(
            "Reader",
            "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            "readers: see the workspace and its runs (control plane, no secrets)",
        ),
    )
}

# Never granted by these stacks; listed so the guard and the policy checks can name them.
PRIVILEGED: dict[str, str] = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Role Based Access Control Administrator": "f58310d9-a9f6-439a-9e8d-f62e7b41a168",
}


def role(name: str) -> Role:
    if name not in ROLES:
        raise KeyError(f"role {name!r} is not in infra/roles.py ROLES; add it there with its reason")
    return ROLES[name]


def definition_id(subscription_id: str, name: str) -> str:
    """The full role definition id as ``azurerm_role_assignment.role_definition_id`` wants it."""
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{role(name).definition_id}"
    )
