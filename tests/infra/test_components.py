"""Each construct alone in a bare stack: assertions on the synthesized Terraform JSON."""

from __future__ import annotations

from typing import Any

import pytest

from infra import roles
from tests.infra.conftest import AKS, BATCH, DEPLOYER, WEB, resources

EP = "33333333-3333-3333-3333-333333333333"


def _role_guid(assignment: dict[str, Any]) -> str:
    return str(assignment["role_definition_id"]).rsplit("/", 1)[-1]


def _grants(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(principal, role name, scope) for every role assignment."""
    by_id = {r.definition_id: r.name for r in roles.ROLES.values()}
    return {
        (a["principal_id"], by_id[_role_guid(a)], a["scope"])
        for a in resources(doc, "azurerm_role_assignment")
    }


def test_workspace_secure_defaults(bare: dict[str, Any]) -> None:
    doc = bare["workspace"]
    (acr,) = resources(doc, "azurerm_container_registry")
    assert acr["admin_enabled"] is False
    assert acr["public_network_access_enabled"] is False
    assert acr["anonymous_pull_enabled"] is False
    (appi,) = resources(doc, "azurerm_application_insights")
    assert appi["workspace_id"].startswith("${azurerm_log_analytics_workspace.")
    (kv,) = resources(doc, "azurerm_key_vault")
    assert kv["rbac_authorization_enabled"] is True
    assert kv["purge_protection_enabled"] is True
    assert kv["public_network_access_enabled"] is False
    assert kv["network_acls"]["default_action"] == "Deny"
    (st,) = resources(doc, "azurerm_storage_account")
    assert st["min_tls_version"] == "TLS1_2"
    assert st["public_network_access_enabled"] is False
    assert st["allow_nested_items_to_be_public"] is False
    assert 3 <= len(st["name"]) <= 24 and st["name"].isalnum()
    (ws,) = resources(doc, "azurerm_machine_learning_workspace")
    assert ws["identity"]["type"] == "SystemAssigned"
    assert ws["public_network_access_enabled"] is False
    assert ws["managed_network"]["isolation_mode"] == "AllowOnlyApprovedOutbound"
    for ref in ("application_insights_id", "key_vault_id", "storage_account_id", "container_registry_id"):
        assert ws[ref].startswith("${azurerm_")


def test_access_scopes_each_grant_to_one_resource(bare: dict[str, Any]) -> None:
    grants = _grants(bare["access"])
    assert grants == {
        (DEPLOYER, "AzureML Data Scientist", "/ws/id"),
        (DEPLOYER, "AcrPush", "/acr/id"),
        (DEPLOYER, "Storage Blob Data Contributor", "/st/id"),
        (DEPLOYER, "Log Analytics Reader", "/log/id"),
        (DEPLOYER, "Website Contributor", "/app/id"),
        (EP, "AcrPull", "/acr/id"),
        (EP, "Storage Blob Data Reader", "/st/id"),
        (EP, "Azure ML Workspace Connection Secrets Reader", "/ws/id"),
        (EP, "AzureML Metrics Writer", "/ws/id"),
        ("44444444-4444-4444-4444-444444444444", "Reader", "/ws/id"),
        ("44444444-4444-4444-4444-444444444444", "Storage Blob Data Reader", "/st/id"),
        (BATCH, "AcrPull", "/acr/id"),
        (BATCH, "Storage Blob Data Contributor", "/st/id"),
        (BATCH, "Azure ML Workspace Connection Secrets Reader", "/ws/id"),
        (BATCH, "AzureML Metrics Writer", "/ws/id"),
        (WEB, "Monitoring Metrics Publisher", "/appi/id"),
    }
    for a in resources(bare["access"], "azurerm_role_assignment"):
        assert a["role_definition_id"].startswith("/subscriptions/00000000-0000-0000-0000-000000000000/")
        assert _role_guid(a) not in roles.PRIVILEGED.values()
    ep = [a for a in resources(bare["access"], "azurerm_role_assignment") if a["principal_id"] == EP]
    assert all(a["skip_service_principal_aad_check"] is True for a in ep)


def test_grant_refuses_privileged_roles_and_subscription_scope() -> None:
    import cdktf

    from infra.components.access import Principal, grant

    stack = cdktf.TerraformStack(cdktf.App(), "guard")
    deployer = Principal("deployer", DEPLOYER)
    with pytest.raises(ValueError, match="privileged"):
        grant(
            stack, "a", subscription_id="s", role_name="Contributor", resource_id="/x/y", principal=deployer
        )
    with pytest.raises(ValueError, match="whole subscription"):
        grant(
            stack,
            "b",
            subscription_id="s",
            role_name="AcrPull",
            resource_id="/subscriptions/00000000-0000-0000-0000-000000000000",
            principal=deployer,
        )
    with pytest.raises(KeyError, match=r"roles\.py"):
        grant(
            stack,
            "c",
            subscription_id="s",
            role_name="Key Vault Reader",
            resource_id="/x",
            principal=deployer,
        )


def test_key_vault_rbac_grants_secrets_user_not_reader(bare: dict[str, Any]) -> None:
    doc = bare["kv_rbac"]
    (current,) = doc["data"]["azurerm_client_config"]
    apply_identity = f"${{data.azurerm_client_config.{current}.object_id}}"
    assert _grants(doc) == {
        (EP, "Key Vault Secrets User", "/kv/id"),
        (DEPLOYER, "Key Vault Secrets Officer", "/kv/id"),
        (apply_identity, "Key Vault Secrets Officer", "/kv/id"),  # writes the App Service secrets
    }
    (terraform,) = [
        a for a in resources(doc, "azurerm_role_assignment") if a["principal_id"] == apply_identity
    ]
    # skipped when terraform runs as the deployer (same grant twice fails in Azure)
    assert (
        terraform["count"] == f'${{(data.azurerm_client_config.{current}.object_id == "{DEPLOYER}") ? 0 : 1}}'
    )
    assert "principal_type" not in terraform  # a user or a service principal: Azure looks it up
    assert resources(doc, "azurerm_key_vault_access_policy") == []


def test_key_vault_access_policies_get_list(bare: dict[str, Any]) -> None:
    doc = bare["kv_access_policies"]
    assert resources(doc, "azurerm_role_assignment") == []
    policies = {p["object_id"]: p for p in resources(doc, "azurerm_key_vault_access_policy")}
    (current,) = doc["data"]["azurerm_client_config"]
    terraform = policies.pop(f"${{data.azurerm_client_config.{current}.object_id}}")
    assert terraform["tenant_id"] == f"${{data.azurerm_client_config.{current}.tenant_id}}"
    assert "Set" in terraform["secret_permissions"] and terraform["count"].endswith("? 0 : 1}")
    assert policies[EP]["secret_permissions"] == ["Get", "List"]
    assert policies[EP]["key_vault_id"] == "/kv/id"
    assert set(policies[DEPLOYER]["secret_permissions"]) >= {"Get", "List", "Set"}
    assert "Purge" not in policies[DEPLOYER]["secret_permissions"]
    for p in policies.values():
        assert "key_permissions" not in p and "certificate_permissions" not in p


def test_connection_bodies_follow_rest_shape_and_hold_no_key(bare: dict[str, Any]) -> None:
    doc = bare["connections"]
    conns = {c["name"]: c for c in resources(doc, "azapi_resource")}
    aoai = conns["aoai"]
    assert aoai["type"] == "Microsoft.MachineLearningServices/workspaces/connections@2024-04-01"
    assert aoai["parent_id"] == "/ws/id"
    assert aoai["body"] == {
        "properties": {
            "category": "AzureOpenAI",
            "authType": "ApiKey",
            "target": "https://gaops-dev-aoai.openai.azure.com/",
            "isSharedToAll": False,
            "metadata": {"ApiType": "azure", "ApiVersion": "2024-02-01"},
        }
    }
    assert aoai["sensitive_body"] == {"properties": {"credentials": {"key": "${var.secret_aoai_api_key}"}}}
    assert doc["variable"]["secret_aoai_api_key"]["sensitive"] is True
    assert doc["variable"]["secret_aoai_api_key"]["ephemeral"] is True
    search = conns["search"]
    assert search["sensitive_body"]["properties"]["credentials"]["key"] == (
        "${ephemeral.azurerm_key_vault_secret.kv_search_key.value}"
    )
    assert doc["ephemeral"]["azurerm_key_vault_secret"]["kv_search_key"] == {
        "name": "search-key",
        "key_vault_id": "/kv/id",
    }
    aad = conns["aoai_aad"]
    assert aad["body"]["properties"]["authType"] == "AAD"
    assert "sensitive_body" not in aad and "credentials" not in aad["body"]["properties"]


def test_online_endpoint_auth_mode_identity_network(bare: dict[str, Any]) -> None:
    eps = {e["name"]: e for e in resources(bare["endpoint"], "azapi_resource")}
    aad = eps["ep-aad-token"]
    assert aad["type"] == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-04-01"
    assert aad["body"]["properties"]["authMode"] == "AADToken"
    assert aad["body"]["properties"]["publicNetworkAccess"] == "Disabled"
    assert "traffic" not in aad["body"]["properties"]  # owned by the release tooling
    assert aad["identity"] == [{"type": "SystemAssigned"}]
    assert aad["tags"]["genaiops-auth-policy"] == "aad-required"
    key = eps["ep-key"]
    assert key["body"]["properties"]["authMode"] == "Key"
    assert key["tags"]["genaiops-auth-policy"] == "any"


def test_kubernetes_attach_extension_by_default(bare: dict[str, Any]) -> None:
    doc = bare["kubernetes_extension"]
    (ext,) = resources(doc, "azurerm_kubernetes_cluster_extension")
    assert ext["extension_type"] == "Microsoft.AzureML.Kubernetes"
    assert ext["cluster_id"] == AKS
    assert ext["configuration_settings"]["enableInference"] == "True"
    (compute,) = resources(doc, "azapi_resource")
    assert compute["type"] == "Microsoft.MachineLearningServices/workspaces/computes@2024-04-01"
    props = compute["body"]["properties"]
    assert props["computeType"] == "Kubernetes" and props["resourceId"] == AKS
    assert props["properties"]["namespace"] == "azureml"
    assert compute["depends_on"] == [
        f"azurerm_kubernetes_cluster_extension.{next(iter(doc['resource']['azurerm_kubernetes_cluster_extension']))}"
    ]
    assert resources(doc, "azurerm_machine_learning_inference_cluster") == []


def test_kubernetes_legacy_inference_cluster_only_when_asked(bare: dict[str, Any]) -> None:
    doc = bare["kubernetes_legacy"]
    (legacy,) = resources(doc, "azurerm_machine_learning_inference_cluster")
    assert legacy["kubernetes_cluster_id"] == AKS
    assert resources(doc, "azapi_resource") == []
    assert resources(doc, "azurerm_kubernetes_cluster_extension") == []


def test_web_app_and_slot(bare: dict[str, Any]) -> None:
    doc = bare["webapp"]
    (plan,) = resources(doc, "azurerm_service_plan")
    assert plan["os_type"] == "Linux"
    (app,) = resources(doc, "azurerm_linux_web_app")
    (slot,) = resources(doc, "azurerm_linux_web_app_slot")
    assert slot["name"] == "staging" and slot["app_service_id"].startswith("${azurerm_linux_web_app.")
    for site in (app, slot):
        assert site["https_only"] is True
        assert site["identity"] == {"type": "SystemAssigned"}
        assert site["ftp_publish_basic_authentication_enabled"] is False
        cfg = site["site_config"]
        assert cfg["minimum_tls_version"] == "1.2"
        assert cfg["health_check_path"] == "/health"
        assert cfg["ftps_state"] == "Disabled"
        assert cfg["container_registry_use_managed_identity"] is True
        assert cfg["application_stack"]["docker_registry_url"] == "https://acr1.azurecr.io"
        assert "docker_registry_password" not in cfg["application_stack"]
        # the release tooling writes the slot's settings and image; a swap moves them to the app
        assert site["lifecycle"]["ignore_changes"] == ["app_settings", "site_config[0].application_stack"]
        settings = site["app_settings"]
        assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"].startswith("@Microsoft.KeyVault(SecretUri=")
        assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"


def test_batch_compute_scales_to_zero_without_keys_or_public_ip(bare: dict[str, Any]) -> None:
    (cluster,) = resources(bare["batch_managed"], "azurerm_machine_learning_compute_cluster")
    assert cluster["name"] == "cpu-cluster"
    assert cluster["machine_learning_workspace_id"] == "/ws/id"
    assert cluster["identity"] == {"type": "SystemAssigned"}
    assert cluster["scale_settings"] == {
        "min_node_count": 0,
        "max_node_count": 4,
        "scale_down_nodes_after_idle_duration": "PT5M",
    }
    assert cluster["local_auth_enabled"] is False
    assert cluster["ssh_public_access_enabled"] is False
    assert cluster["node_public_ip_enabled"] is False
    assert "subnet_resource_id" not in cluster  # the managed network places the nodes
    # without a managed network and without a subnet, Azure needs the node public IP
    (open_cluster,) = resources(bare["batch_open"], "azurerm_machine_learning_compute_cluster")
    assert open_cluster["node_public_ip_enabled"] is True
    assert open_cluster["local_auth_enabled"] is False


def test_telemetry_grant_needs_the_app_insights_scope() -> None:
    import cdktf

    from infra.components.access import Access, Principal, Scopes

    stack = cdktf.TerraformStack(cdktf.App(), "telemetry")
    with pytest.raises(ValueError, match="app_insights_id"):
        Access(
            stack,
            "access",
            subscription_id="s",
            scopes=Scopes(workspace_id="/ws", registry_id="/acr", storage_id="/st"),
            deployer=Principal("deployer", DEPLOYER),
            telemetry=[Principal("web", WEB)],
        )
