"""Who may read secrets in the environment's Key Vault.

RBAC vaults (the default): "Key Vault Secrets User" for readers, on the vault only. Access-policy
vaults: get/list on secrets. Never "Key Vault Reader": it cannot read secret values. Readers are
the App Service identities (Key Vault references); online endpoints read keys through workspace
connections instead, and nobody writes secrets through the data plane: terraform writes them
through ARM (:mod:`infra.components.vault_secrets`), so no one holds "Key Vault Secrets Officer".
:attr:`KeyVaultAccess.grants` are what secret writes wait for (after a ``time_sleep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cdktf
from cdktf_cdktf_provider_azurerm.key_vault_access_policy import KeyVaultAccessPolicyA
from cdktf_cdktf_provider_azurerm.role_assignment import RoleAssignment
from constructs import Construct

from infra.components.access import Principal, grant

READ = ["Get", "List"]


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
    ) -> None:
        super().__init__(scope, id)
        self.role_assignments: list[RoleAssignment] = []
        self.access_policies: list[KeyVaultAccessPolicyA] = []
        self.grants: list[cdktf.TerraformResource] = []
        for principal in readers:
            key = f"{principal.label}_read"
            if authorization == "rbac":
                assignment = grant(
                    self,
                    key,
                    subscription_id=subscription_id,
                    role_name="Key Vault Secrets User",
                    resource_id=key_vault_id,
                    principal=principal,
                )
                self.role_assignments.append(assignment)
                self.grants.append(assignment)
            else:
                policy = KeyVaultAccessPolicyA(
                    self,
                    key,
                    key_vault_id=key_vault_id,
                    tenant_id=tenant_id,
                    object_id=principal.object_id,
                    secret_permissions=list(READ),
                )
                self.access_policies.append(policy)
                self.grants.append(policy)
