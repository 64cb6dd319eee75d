"""Who may read or write secrets in the environment's Key Vault.

RBAC vaults (the default): "Key Vault Secrets User" for readers, "Key Vault Secrets Officer"
for writers, each on the vault only. Access-policy vaults: get/list on secrets for readers,
plus set/delete for writers. Never "Key Vault Reader": it cannot read secret values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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
    ) -> None:
        super().__init__(scope, id)
        self.role_assignments: list[RoleAssignment] = []
        self.access_policies: list[KeyVaultAccessPolicyA] = []
        for principal, rbac_role, permissions in [
            *((p, "Key Vault Secrets User", READ) for p in readers),
            *((p, "Key Vault Secrets Officer", WRITE) for p in writers),
        ]:
            key = f"{principal.label}_{'read' if permissions is READ else 'write'}"
            if authorization == "rbac":
                self.role_assignments.append(
                    grant(
                        self,
                        key,
                        subscription_id=subscription_id,
                        role_name=rbac_role,
                        resource_id=key_vault_id,
                        principal=principal,
                    )
                )
            else:
                self.access_policies.append(
                    KeyVaultAccessPolicyA(
                        self,
                        key,
                        key_vault_id=key_vault_id,
                        tenant_id=tenant_id,
                        object_id=principal.object_id,
                        secret_permissions=list(permissions),
                    )
                )
