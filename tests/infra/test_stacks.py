"""Whole environment stacks synthesized from config (one process, see conftest.stacks):
dev (public profile), prod (private, Kubernetes), private (dev under the private profile with
an approved-outbound managed network), variant (prod under the public profile), insecure."""

from __future__ import annotations

from typing import Any

from infra import roles
from tests.infra.conftest import CANARY, DEPLOYER, STACKS, Synthesized, resources

PROMOTER = "22222222-2222-2222-2222-222222222222"  # PROD_DEPLOYER_OBJECT_ID's example value


def test_one_stack_per_azure_environment(stacks: Synthesized) -> None:
    assert sorted(p.name for p in (stacks.out / "stacks").iterdir()) == sorted(STACKS)
    assert stacks.json["dev"]["output"]["network_profile"]["value"] == "public"
    assert stacks.json["prod"]["output"]["network_profile"]["value"] == "private"


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
    assert providers["time"]["source"] == "hashicorp/time"


def test_provider_features_block_is_not_empty(stacks: Synthesized) -> None:
    """M4: a plain dict synthesizes as ``features: [{}]`` (jsii drops snake_case keys); the typed
    struct keeps them. H1: azurerm must not poll the data plane of a private storage account."""
    for env in STACKS:
        (provider,) = stacks.json[env]["provider"]["azurerm"]
        (features,) = provider["features"]
        assert features["storage"] == [{"data_plane_available": False}]
        assert features["key_vault"] == [
            {"purge_soft_delete_on_destroy": False, "recover_soft_deleted_key_vaults": True}
        ]
        assert features["resource_group"] == [{"prevent_deletion_if_contains_resources": True}]


def test_outputs_the_release_tooling_reads(stacks: Synthesized) -> None:
    dev = stacks.json["dev"]["output"]
    for name in ("workspace_name", "workspace_id", "registry_login_server", "resource_group_name", "flows"):
        assert name in dev
    flows = dev["flows"]["value"]
    assert flows["web_classification"]["endpoint_name"] == "gaops-dev-web-classification"
    assert "identity[0].principal_id" in flows["web_classification"]["principal_id"]
    assert flows["support_triage"]["web_app_name"] == "gaops-dev-support-triage"
    assert flows["support_triage"]["slot_name"] == "staging"
    prod = stacks.json["prod"]["output"]
    assert {f["target"] for f in prod["flows"]["value"].values()} == {"kubernetes"}
    assert prod["agent_pool"]["value"]["name"] == "genaiops-prod-agents"
    assert "agent_pool" not in dev


def _grants(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    by_id = {r.definition_id: r.name for r in roles.ROLES.values()}
    return [
        (a["principal_id"], by_id[a["role_definition_id"].rsplit("/", 1)[-1]], a["scope"].split(".")[0])
        for a in resources(doc, "azurerm_role_assignment")
    ]


def _mine(grants: list[tuple[str, str, str]], principal: str) -> list[tuple[str, str]]:
    return sorted((role, scope) for p, role, scope in grants if p == principal)


SECRETS_READER = "Azure Machine Learning Workspace Connection Secrets Reader"


def test_every_identity_gets_exactly_its_roles(stacks: Synthesized) -> None:
    doc = stacks.json["dev"]
    grants = _grants(doc)
    flows = doc["output"]["flows"]["value"]
    endpoint = flows["web_classification"]["principal_id"]
    web = {flows["support_triage"]["principal_id"], flows["support_triage"]["slot_principal_id"]}
    batch = doc["output"]["batch_compute_principal_id"]["value"]
    assert {p for p, _, _ in grants} == {DEPLOYER, PROMOTER, endpoint, batch, *web}
    # M2: Azure ML itself gives a system-assigned endpoint identity AcrPull, Storage Blob Data
    # Reader and Metrics Writer; granting them again ends in 409 RoleAssignmentExists
    assert _mine(grants, endpoint) == [
        (SECRETS_READER, "${azurerm_machine_learning_workspace"),
        ("Monitoring Metrics Publisher", "${azurerm_application_insights"),
    ]
    # M5: web app and slot: image pull, Key Vault references, telemetry; no connection keys
    for principal in web:
        assert _mine(grants, principal) == [
            ("AcrPull", "${azurerm_container_registry"),
            ("Key Vault Secrets User", "${azurerm_key_vault"),
            ("Monitoring Metrics Publisher", "${azurerm_application_insights"),
        ]
    assert _mine(grants, batch) == [
        ("AcrPull", "${azurerm_container_registry"),
        (SECRETS_READER, "${azurerm_machine_learning_workspace"),
        ("AzureML Metrics Writer (preview)", "${azurerm_machine_learning_workspace"),
        ("Storage Blob Data Contributor", "${azurerm_storage_account"),
    ]
    # M5: no Key Vault Secrets Officer (secrets go through ARM); one Website Contributor per app
    assert _mine(grants, DEPLOYER) == [
        ("AcrPush", "${azurerm_container_registry"),
        ("AzureML Data Scientist", "${azurerm_machine_learning_workspace"),
        ("Log Analytics Reader", "${azurerm_log_analytics_workspace"),
        ("Storage Blob Data Contributor", "${azurerm_storage_account"),
        ("Website Contributor", "${azurerm_linux_web_app"),
    ]
    # M6: prod's deployer copies released images out of dev's registry (promote)
    assert _mine(grants, PROMOTER) == [("AcrPull", "${azurerm_container_registry")]
    for _, _, scope in grants:
        assert scope.startswith("${azurerm_"), scope  # one resource, never a subscription


def test_kubernetes_compute_identity_pulls_images(stacks: Synthesized) -> None:
    doc = stacks.json["prod"]
    grants = _grants(doc)
    (compute,) = [r for r in resources(doc, "azapi_resource") if r["type"].endswith("/computes@2024-04-01")]
    (key,) = [k for k, r in doc["resource"]["azapi_resource"].items() if r is compute]
    principal = f"${{azapi_resource.{key}.identity[0].principal_id}}"
    assert _mine(grants, principal) == [("AcrPull", "${azurerm_container_registry")]
    endpoints = [r for r in resources(doc, "azapi_resource") if "/onlineEndpoints@" in r["type"]]
    assert len(endpoints) == 2
    for endpoint in endpoints:
        assert endpoint["body"]["properties"]["authMode"] == "AMLToken"  # H5: not AADToken
        assert endpoint["body"]["properties"]["compute"] == f"${{azapi_resource.{key}.id}}"
    (extension,) = resources(doc, "azurerm_kubernetes_cluster_extension")
    settings = extension["configuration_settings"]  # H5: no HTTPS without a certificate
    assert settings["allowInsecureConnections"] == "True"
    assert settings["inferenceRouterServiceType"] == "LoadBalancer"
    assert settings["internalLoadBalancerProvider"] == "azure"


def test_public_profile_is_reachable_with_entra_id_only(stacks: Synthesized) -> None:
    doc = stacks.json["dev"]
    (st,) = resources(doc, "azurerm_storage_account")
    (kv,) = resources(doc, "azurerm_key_vault")
    (acr,) = resources(doc, "azurerm_container_registry")
    (ws,) = resources(doc, "azurerm_machine_learning_workspace")
    assert st["public_network_access_enabled"] and st["network_rules"]["default_action"] == "Allow"
    assert kv["public_network_access_enabled"] and kv["rbac_authorization_enabled"]
    assert acr["public_network_access_enabled"] and acr["admin_enabled"] is False
    assert ws["public_network_access_enabled"] is True
    assert ws["managed_network"]["isolation_mode"] == "AllowInternetOutbound"
    (appi,) = resources(doc, "azurerm_application_insights")
    assert appi["local_authentication_disabled"] is True
    for rtype in (
        "azurerm_virtual_network",
        "azurerm_private_endpoint",
        "azurerm_linux_virtual_machine_scale_set",
    ):
        assert resources(doc, rtype) == []
    (endpoint,) = [r for r in resources(doc, "azapi_resource") if "/onlineEndpoints@" in r["type"]]
    assert endpoint["body"]["properties"]["publicNetworkAccess"] == "Enabled"
    assert endpoint["body"]["properties"]["authMode"] == "AADToken"
    (app,) = resources(doc, "azurerm_linux_web_app")
    assert app["public_network_access_enabled"] is True and "virtual_network_subnet_id" not in app
    # the AOAI connection has a resource id: a private-endpoint rule even with internet outbound
    rules = resources(doc, "azurerm_machine_learning_workspace_network_outbound_rule_private_endpoint")
    assert [(r["name"], r["sub_resource_target"]) for r in rules] == [("pe-aoai", "account")]


def test_public_profile_ip_allow_list(stacks: Synthesized) -> None:
    doc = stacks.json["variant"]
    (st,) = resources(doc, "azurerm_storage_account")
    assert st["network_rules"]["default_action"] == "Deny"
    assert st["network_rules"]["ip_rules"] == ["203.0.113.0/24", "198.51.100.7"]
    (kv,) = resources(doc, "azurerm_key_vault")
    assert kv["network_acls"] == {
        "bypass": "AzureServices",
        "default_action": "Deny",
        "ip_rules": ["203.0.113.0/24", "198.51.100.7"],
    }
    (acr,) = resources(doc, "azurerm_container_registry")
    assert acr["network_rule_set"][0]["default_action"] == "Deny"
    assert [r["ip_range"] for r in acr["network_rule_set"][0]["ip_rule"]] == [
        "203.0.113.0/24",
        "198.51.100.7",
    ]
    (extension,) = resources(doc, "azurerm_kubernetes_cluster_extension")
    settings = extension["configuration_settings"]
    assert (settings["allowInsecureConnections"], settings["sslCname"], settings["sslSecret"]) == (
        "False",
        "flows.example.com",
        "azureml-tls",
    )


def _private_endpoints(doc: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """private endpoint name suffix -> (sub-resource, DNS zone references)."""
    out = {}
    for pe in resources(doc, "azurerm_private_endpoint"):
        connection = pe["private_service_connection"]
        out[pe["name"].split("-pe-", 1)[1]] = (
            connection["subresource_names"][0],
            pe["private_dns_zone_group"]["private_dns_zone_ids"],
        )
    return out


def test_private_profile_network(stacks: Synthesized) -> None:
    for env in ("prod", "private"):
        doc = stacks.json[env]
        (vnet,) = resources(doc, "azurerm_virtual_network")
        subnets = {s["name"]: s for s in resources(doc, "azurerm_subnet")}
        assert set(subnets) == {"snet-private-endpoints", "snet-app-service", "snet-agents", "snet-compute"}
        delegation = subnets["snet-app-service"]["delegation"][0]["service_delegation"]
        assert delegation["name"] == "Microsoft.Web/serverFarms"
        zones = {z["name"] for z in resources(doc, "azurerm_private_dns_zone")}
        assert zones == {
            "privatelink.vaultcore.azure.net",
            "privatelink.azurecr.io",
            "privatelink.blob.core.windows.net",
            "privatelink.file.core.windows.net",
            "privatelink.queue.core.windows.net",
            "privatelink.table.core.windows.net",
            "privatelink.api.azureml.ms",
            "privatelink.notebooks.azure.net",
            "privatelink.azurewebsites.net",
        }
        links = resources(doc, "azurerm_private_dns_zone_virtual_network_link")
        assert len(links) == len(zones) and all(link["registration_enabled"] is False for link in links)
        pes = _private_endpoints(doc)
        for what, sub in (
            ("vault", "vault"),
            ("registry", "registry"),
            ("storage-blob", "blob"),
            ("storage-file", "file"),
            ("storage-queue", "queue"),
            ("storage-table", "table"),
            ("workspace", "amlworkspace"),
        ):
            assert pes[what][0] == sub, what
        assert len(pes["workspace"][1]) == 2  # api.azureml.ms + notebooks.azure.net
        for rtype in ("azurerm_storage_account", "azurerm_key_vault", "azurerm_container_registry"):
            (resource,) = resources(doc, rtype)
            assert resource["public_network_access_enabled"] is False, rtype
        assert len(resources(doc, "azurerm_subnet_nat_gateway_association")) == 2  # agents, compute
        (vmss,) = resources(doc, "azurerm_linux_virtual_machine_scale_set")
        assert vmss["overprovision"] is False and vmss["single_placement_group"] is False
        assert vmss["upgrade_mode"] == "Manual" and vmss["instances"] == 0
        assert vmss["disable_password_authentication"] is True
        assert vmss["identity"]["type"] == "UserAssigned"
        assert vmss["network_interface"][0]["ip_configuration"][0]["subnet_id"].endswith(".id}")
        assert "instances" in vmss["lifecycle"]["ignore_changes"]
        assert resources(doc, "azurerm_user_assigned_identity")
        assert vnet["address_space"] == ["10.40.0.0/16"]


def test_private_profile_app_service_pulls_and_resolves_through_the_vnet(stacks: Synthesized) -> None:
    doc = stacks.json["private"]
    sites = resources(doc, "azurerm_linux_web_app") + resources(doc, "azurerm_linux_web_app_slot")
    assert len(sites) == 2
    for site in sites:  # H6
        assert site["virtual_network_subnet_id"].startswith("${azurerm_subnet.")
        assert site["vnet_image_pull_enabled"] is True
        assert site["site_config"]["vnet_route_all_enabled"] is True
        assert site["public_network_access_enabled"] is False
    pes = _private_endpoints(doc)
    assert pes["app-support-triage"][0] == "sites"
    assert pes["slot-support-triage"][0] == "sites-staging"


def test_managed_network_gets_an_outbound_rule_per_connection_target(stacks: Synthesized) -> None:
    doc = stacks.json["private"]
    (ws,) = resources(doc, "azurerm_machine_learning_workspace")
    assert ws["managed_network"] == {
        "isolation_mode": "AllowOnlyApprovedOutbound",
        "provision_on_creation_enabled": True,  # M8
    }
    pe_rules = {
        r["name"]: r
        for r in resources(doc, "azurerm_machine_learning_workspace_network_outbound_rule_private_endpoint")
    }
    assert set(pe_rules) == {"pe-aoai", "pe-storage-queue", "pe-storage-table"}  # H4
    assert pe_rules["pe-aoai"]["sub_resource_target"] == "account"
    assert pe_rules["pe-aoai"]["service_resource_id"].endswith(
        "/providers/Microsoft.CognitiveServices/accounts/gaops-example-aoai"
    )
    assert pe_rules["pe-storage-queue"]["service_resource_id"].startswith("${azurerm_storage_account.")
    fqdn = {
        r["destination_fqdn"]
        for r in resources(doc, "azurerm_machine_learning_workspace_network_outbound_rule_fqdn")
    }
    assert fqdn == {"www.python.org", "api.openai.com"}  # declared egress + the OpenAI connection
    (cluster,) = resources(doc, "azurerm_machine_learning_compute_cluster")
    assert cluster["timeouts"] == {"create": "60m"}  # M8
    # prod: Kubernetes compute needs isolation disabled; the batch cluster joins our VNet instead
    prod = stacks.json["prod"]
    (prod_ws,) = resources(prod, "azurerm_machine_learning_workspace")
    assert prod_ws["managed_network"] == {"isolation_mode": "Disabled"}
    assert resources(prod, "azurerm_machine_learning_workspace_network_outbound_rule_private_endpoint") == []
    (prod_cluster,) = resources(prod, "azurerm_machine_learning_compute_cluster")
    assert prod_cluster["subnet_resource_id"].startswith("${azurerm_subnet.")
    assert prod_cluster["node_public_ip_enabled"] is False


def test_registry_has_no_quarantine_and_no_content_trust(stacks: Synthesized) -> None:
    for env in STACKS:
        (acr,) = resources(stacks.json[env], "azurerm_container_registry")
        assert acr["quarantine_policy_enabled"] is False, env  # H3
        assert acr["trust_policy_enabled"] is False, env  # L4


def test_secrets_wait_for_rbac_propagation(stacks: Synthesized) -> None:
    doc = stacks.json["dev"]
    (name,) = doc["resource"]["time_sleep"]
    wait = doc["resource"]["time_sleep"][name]
    assert wait["create_duration"] == "120s"  # M3
    grants = {f"azurerm_role_assignment.{k}" for k in doc["resource"]["azurerm_role_assignment"]}
    assert set(wait["depends_on"]) == grants
    secrets = [r for r in resources(doc, "azapi_resource") if r["type"].startswith("Microsoft.KeyVault/")]
    assert len(secrets) == 2
    for secret in secrets:
        assert secret["depends_on"] == [f"time_sleep.{name}"]


def test_access_policy_vault_and_existing_group(stacks: Synthesized) -> None:
    doc = stacks.json["variant"]
    assert resources(doc, "azurerm_resource_group") == []
    assert doc["data"]["azurerm_resource_group"]
    (kv,) = resources(doc, "azurerm_key_vault")
    assert kv["rbac_authorization_enabled"] is False
    assert not [g for g in _grants(doc) if g[1].startswith("Key Vault")]
    assert resources(doc, "azurerm_machine_learning_inference_cluster")


def test_secret_canary_never_reaches_cdktf_out(stacks: Synthesized) -> None:
    files = [p for p in stacks.out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert CANARY not in path.read_text(errors="replace"), path
    assert "secret_aoai_api_key" in stacks.json["dev"]["variable"]
