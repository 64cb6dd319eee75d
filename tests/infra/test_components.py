"""Each construct alone in a bare stack: assertions on the synthesized Terraform JSON."""

from __future__ import annotations

from typing import Any

import pytest

from infra import roles
from tests.infra.conftest import AKS, BATCH, COMPUTE, DEPLOYER, EP, PROMOTER, READER, WEB, resources

SECRETS_READER = "Azure Machine Learning Workspace Connection Secrets Reader"


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
    assert acr["public_network_access_enabled"] is True  # dev: public profile
    assert acr["anonymous_pull_enabled"] is False
    assert acr["quarantine_policy_enabled"] is False and acr["trust_policy_enabled"] is False
    (appi,) = resources(doc, "azurerm_application_insights")
    assert appi["workspace_id"].startswith("${azurerm_log_analytics_workspace.")
    (kv,) = resources(doc, "azurerm_key_vault")
    assert kv["rbac_authorization_enabled"] is True
    assert kv["purge_protection_enabled"] is True
    assert kv["public_network_access_enabled"] is True
    assert kv["network_acls"]["default_action"] == "Allow"
    (st,) = resources(doc, "azurerm_storage_account")
    assert st["min_tls_version"] == "TLS1_2" and st["https_traffic_only_enabled"] is True
    assert st["public_network_access_enabled"] is True
    assert st["allow_nested_items_to_be_public"] is False
    assert 3 <= len(st["name"]) <= 24 and st["name"].isalnum()
    (ws,) = resources(doc, "azurerm_machine_learning_workspace")
    assert ws["identity"]["type"] == "SystemAssigned"
    assert ws["public_network_access_enabled"] is True
    assert ws["managed_network"] == {
        "isolation_mode": "AllowInternetOutbound",
        "provision_on_creation_enabled": True,
    }
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
        # system-assigned endpoint: only what Azure ML does not grant itself (M2)
        (EP, SECRETS_READER, "/ws/id"),
        (EP, "Monitoring Metrics Publisher", "/appi/id"),
        (WEB, "AcrPull", "/acr/id"),
        (WEB, "Monitoring Metrics Publisher", "/appi/id"),
        (COMPUTE, "AcrPull", "/acr/id"),
        (READER, "Reader", "/ws/id"),
        (READER, "Storage Blob Data Reader", "/st/id"),
        (BATCH, "AcrPull", "/acr/id"),
        (BATCH, "Storage Blob Data Contributor", "/st/id"),
        (BATCH, SECRETS_READER, "/ws/id"),
        (BATCH, "AzureML Metrics Writer (preview)", "/ws/id"),
        (PROMOTER, "AcrPull", "/acr/id"),
    }
    for a in resources(bare["access"], "azurerm_role_assignment"):
        assert a["role_definition_id"].startswith("/subscriptions/00000000-0000-0000-0000-000000000000/")
        assert _role_guid(a) not in roles.PRIVILEGED.values()
    ep = [a for a in resources(bare["access"], "azurerm_role_assignment") if a["principal_id"] == EP]
    assert all(a["skip_service_principal_aad_check"] is True for a in ep)


def test_role_table_names_match_azure_built_in_names() -> None:
    """L2: the labels are the official role names (built-in-roles page)."""
    assert SECRETS_READER in roles.ROLES
    assert "AzureML Metrics Writer (preview)" in roles.ROLES
    assert "Key Vault Secrets Officer" not in roles.ROLES  # nobody writes secrets via the data plane


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
    assert _grants(doc) == {(WEB, "Key Vault Secrets User", "/kv/id")}
    assert resources(doc, "azurerm_key_vault_access_policy") == []
    assert "data" not in doc  # no client-config lookup: terraform writes no data-plane secret


def test_key_vault_access_policies_get_list(bare: dict[str, Any]) -> None:
    doc = bare["kv_access_policies"]
    assert resources(doc, "azurerm_role_assignment") == []
    (policy,) = resources(doc, "azurerm_key_vault_access_policy")
    assert policy["object_id"] == WEB and policy["key_vault_id"] == "/kv/id"
    assert policy["secret_permissions"] == ["Get", "List"]
    assert "key_permissions" not in policy and "certificate_permissions" not in policy


def test_time_sleep_is_written_like_azapi(bare: dict[str, Any]) -> None:
    doc = bare["time"]
    assert doc["terraform"]["required_providers"]["time"]["source"] == "hashicorp/time"
    (wait,) = resources(doc, "time_sleep")
    assert wait["create_duration"] == "120s" and wait["triggers"] == {"p": "x"}
    import cdktf

    from infra.time_sleep import TimeProvider, TimeSleep

    stack = cdktf.TerraformStack(cdktf.App(), "bad_duration")
    with pytest.raises(ValueError, match="create_duration"):
        TimeSleep(stack, "w", provider=TimeProvider(stack, "t"), create_duration="two minutes")


def test_provider_features_block_is_typed(bare: dict[str, Any]) -> None:
    (provider,) = bare["workspace"]["provider"]["azurerm"]
    assert provider["features"] != [{}]
    assert provider["features"][0]["storage"] == [{"data_plane_available": False}]


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
            "target": "https://gaops-example-aoai.openai.azure.com/",
            "isSharedToAll": False,
            "metadata": {
                "ApiType": "azure",
                "ApiVersion": "2024-02-01",
                "ResourceId": (
                    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/gaops-aoai-rg/"
                    "providers/Microsoft.CognitiveServices/accounts/gaops-example-aoai"
                ),
            },
        }
    }
    assert aoai["sensitive_body"] == {"properties": {"credentials": {"key": "${var.secret_aoai_api_key}"}}}
    assert aoai["sensitive_body_version"] == {"properties.credentials.key": "1"}
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
    assert "sensitive_body_version" not in aad


def test_key_rotation_bumps_the_sensitive_body_version(bare: dict[str, Any]) -> None:
    """A write-only key is never diffed: bumping ``key_version`` is what makes the plan update
    the workspace connection (azapi ``sensitive_body_version``); nothing else changes."""
    before = {c["name"]: c for c in resources(bare["connections"], "azapi_resource")}
    after = {c["name"]: c for c in resources(bare["connections_rotated"], "azapi_resource")}
    for name in ("aoai", "search"):
        assert before[name]["sensitive_body_version"] == {"properties.credentials.key": "1"}
        assert after[name]["sensitive_body_version"] == {"properties.credentials.key": "2"}
        same = ("//", "sensitive_body_version")  # "//" holds the construct path
        assert {k: v for k, v in before[name].items() if k not in same} == {
            k: v for k, v in after[name].items() if k not in same
        }


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
    settings = ext["configuration_settings"]  # H5: HTTPS needs sslCname + a certificate secret
    assert (settings["allowInsecureConnections"], settings["sslCname"], settings["sslSecret"]) == (
        "False",
        "flows.example.com",
        "azureml-tls",
    )
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
        assert cfg["vnet_route_all_enabled"] is True  # H6: Key Vault references via the VNet
        assert site["virtual_network_subnet_id"] == "/snet/app"
        assert site["vnet_image_pull_enabled"] is True  # H6: image pull via the VNet
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
    assert cluster["timeouts"] == {"create": "60m"}
    # without a managed network and without a subnet, Azure needs the node public IP
    (open_cluster,) = resources(bare["batch_open"], "azurerm_machine_learning_compute_cluster")
    assert open_cluster["node_public_ip_enabled"] is True
    assert open_cluster["local_auth_enabled"] is False


def test_grant_needs_its_scope() -> None:
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
            web=[Principal("web", WEB)],
        )
