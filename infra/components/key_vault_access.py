"""Who may read or write secrets in the environment's Key Vault.

RBAC vaults (the default): "Key Vault Secrets User" for readers, "Key Vault Secrets Officer"
for writers, each on the vault only. Access-policy vaults: get/list on secrets for readers,
plus set/delete for writers. Never "Key Vault Reader": it cannot read secret values.

``apply_identity_unless``: the identity running ``terraform apply`` writes the secrets of
:class:`infra.components.vault_secrets.VaultSecrets`, so it gets the writer grant too, unless
its object id is that one (the deployer, already a writer: a second identical grant fails).
:attr:`KeyVaultAccess.writer_grants` are what secret writes must wait for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cdktf
from cdktf_cdktf_provider_azurerm.data_azurerm_client_config import DataAzurermClientConfig
from cdktf_cdktf_provider_azurerm.key_vault_access_policy import KeyVaultAccessPolicyA
from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
from constructs import Construct

from infra.components.access import Principal, grant

READ = ["Get", "List"]
WRITE = ["Get", "List", "Set", "Delete", "Recover"]


class KeyVaultAccess(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        subscription_id: str,
        tenant_id: str,
        key_vault_id: str,
        authorization: Literal["rbac", "access_policies"],
        readers: Sequence[Principal] = (),
        writers: Sequence[Principal] = (),
        apply_identity_unless: str | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.role_assignments: list[RoleAssignment] = []
        self.access_policies: list[KeyVaultAccessPolicyA] = []
        self.writer_grants: list[cdktf.TerraformResource] = []
        self._subscription_id = subscription_id
        self._key_vault_id = key_vault_id
        self._authorization = authorization
        for principal in readers:
            self._grant(principal, "Key Vault Secrets User", READ, tenant_id)
        for principal in writers:
            self.writer_grants.append(self._grant(principal, "Key Vault Secrets Officer", WRITE, tenant_id))
        if apply_identity_unless is not None:
            current = DataAzurermClientConfig(self, "current")
            terraform = Principal("terraform", current.object_id, principal_type=None)
            resource = self._grant(terraform, "Key Vault Secrets Officer", WRITE, current.tenant_id)
            resource.add_override(
                "count", cdktf.Fn.conditional(cdktf.Op.eq(current.object_id, apply_identity_unless), 0, 1)
            )
            self.writer_grants.append(resource)

    def _grant(
        self, principal: Principal, rbac_role: str, permissions: list[str], tenant_id: str
    ) -> cdktf.TerraformResource:
        key = f"{principal.label}_{'read' if permissions is READ else 'write'}"
        if self._authorization == "rbac":
            assignment = grant(
                self,
                key,
                subscription_id=self._subscription_id,
                role_name=rbac_role,
                resource_id=self._key_vault_id,
                principal=principal,
            )
            self.role_assignments.append(assignment)
            return assignment
        policy = KeyVaultAccessPolicyA(
            self,
            key,
            key_vault_id=self._key_vault_id,
            tenant_id=tenant_id,
            object_id=principal.object_id,
            secret_permissions=list(permissions),
        )
        self.access_policies.append(policy)
        return policy
