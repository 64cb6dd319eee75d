"""Whole environment stacks synthesized from config (one process, see conftest.stacks)."""

from __future__ import annotations

from typing import Any

from infra import roles
from tests.infra.conftest import CANARY, DEPLOYER, Synthesized, resources


def test_one_stack_per_azure_environment(stacks: Synthesized) -> None:
    assert sorted(p.name for p in (stacks.out / "stacks").iterdir()) == ["dev", "insecure", "prod", "variant"]


def test_backend_from_config(stacks: Synthesized) -> None:
    for env in ("dev", "prod"):
        backend = stacks.json[env]["terraform"]["backend"]["azurerm"]
        assert backend["key"] == f"{env}.tfstate"
        assert backend["container_name"] == "tfstate"
        assert backend["storage_account_name"] == "gaopstfstate"
        assert backend["resource_group_name"] == "gaops-tfstate-rg"
        assert backend["use_azuread_auth"] is True
    providers = stacks.json["dev"]["terraform"]["required_providers"]
    assert providers["azapi"]["source"] == "Azure/azapi"


def test_outputs_the_release_tooling_reads(stacks: Synthesized) -> None:
    dev = stacks.json["dev"]["output"]
    for name in ("workspace_name", "workspace_id", "registry_login_server", "resource_group_name", "flows"):
        assert name in dev
    flows = dev["flows"]["value"]
    assert flows["web_classification"]["endpoint_name"] == "gaops-dev-web-classification"
    assert "identity[0].principal_id" in flows["web_classification"]["principal_id"]
    assert flows["support_triage"]["web_app_name"] == "gaops-dev-support-triage"
    assert flows["support_triage"]["slot_name"] == "staging"
    prod = stacks.json["prod"]["output"]["flows"]["value"]
    assert prod["support_triage"]["target"] == "kubernetes"


def _grants(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    by_id = {r.definition_id: r.name for r in roles.ROLES.values()}
    return [
        (a["principal_id"], by_id[a["role_definition_id"].rsplit("/", 1)[-1]], a["scope"])
        for a in resources(doc, "azurerm_role_assignment")
    ]


def test_every_runtime_identity_gets_exactly_its_roles(stacks: Synthesized) -> None:
    doc = stacks.json["dev"]
    grants = _grants(doc)
    flows = doc["output"]["flows"]["value"]
    endpoint = flows["web_classification"]["principal_id"]
    web = {flows["support_triage"]["principal_id"], flows["support_triage"]["slot_principal_id"]}
    batch = doc["output"]["batch_compute_principal_id"]["value"]
    (current,) = doc["data"]["azurerm_client_config"]
    apply_identity = f"${{data.azurerm_client_config.{current}.object_id}}"
    assert {p for p, _, _ in grants} == {DEPLOYER, endpoint, batch, apply_identity, *web}

    def mine(principal: str) -> list[tuple[str, str]]:
        return sorted((role, scope.split(".")[0]) for p, role, scope in grants if p == principal)

    runtime = [
        ("AcrPull", "${azurerm_container_registry"),
        ("Azure ML Workspace Connection Secrets Reader", "${azurerm_machine_learning_workspace"),
        ("AzureML Metrics Writer", "${azurerm_machine_learning_workspace"),
        ("Key Vault Secrets User", "${azurerm_key_vault"),
        ("Storage Blob Data Reader", "${azurerm_storage_account"),
    ]
    assert mine(endpoint) == runtime
    for principal in web:  # web app and slot also send telemetry to App Insights with Entra ID
        assert mine(principal) == sorted(
            [*runtime, ("Monitoring Metrics Publisher", "${azurerm_application_insights")]
        )
    # the batch cluster: no Key Vault, no control plane; read/write on the datastore only
    assert mine(batch) == [
        ("AcrPull", "${azurerm_container_registry"),
        ("Azure ML Workspace Connection Secrets Reader", "${azurerm_machine_learning_workspace"),
        ("AzureML Metrics Writer", "${azurerm_machine_learning_workspace"),
        ("Storage Blob Data Contributor", "${azurerm_storage_account"),
    ]
    assert mine(apply_identity) == [("Key Vault Secrets Officer", "${azurerm_key_vault")]
    deployer = sorted(role for p, role, _ in grants if p == DEPLOYER)
    assert deployer == sorted(
        [
            "AzureML Data Scientist",
            "AcrPush",
            "Storage Blob Data Contributor",
            "Log Analytics Reader",
            "Key Vault Secrets Officer",
            "Website Contributor",
            "Website Contributor",
        ]
    )
    for _, _, scope in grants:
        assert scope.startswith("${azurerm_"), scope  # one resource, never a subscription


def test_access_policy_vault_and_existing_group(stacks: Synthesized) -> None:
    doc = stacks.json["variant"]
    assert resources(doc, "azurerm_resource_group") == []
    assert doc["data"]["azurerm_resource_group"]
    (kv,) = resources(doc, "azurerm_key_vault")
    assert kv["rbac_authorization_enabled"] is False
    policies = resources(doc, "azurerm_key_vault_access_policy")
    readers = [p for p in policies if p["secret_permissions"] == ["Get", "List"]]
    assert len(readers) == 2  # the managed endpoint and the kubernetes endpoint
    assert not [g for g in _grants(doc) if g[1].startswith("Key Vault")]
    assert resources(doc, "azurerm_machine_learning_inference_cluster")


def test_secret_canary_never_reaches_cdktf_out(stacks: Synthesized) -> None:
    files = [p for p in stacks.out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert CANARY not in path.read_text(errors="replace"), path
    assert "secret_aoai_api_key" in stacks.json["dev"]["variable"]
