"""What the Azure release code needs from infra (release/targets/appservice.py,
release/engine/azure_runs.py): the batch cluster, the Key Vault secrets App Service references,
and web app settings left to the release tooling. Assertions on the synthesized stacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import naming
from infra.validate import check
from release.config import CONFIG_DIR, ConfigError, EnvSecret, load_config
from tests.infra.conftest import CANARY, Synthesized, resources


def _secrets(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        s["name"]: s
        for s in resources(doc, "azapi_resource")
        if s["type"] == "Microsoft.KeyVault/vaults/secrets@2023-07-01"
    }


def test_batch_cluster_is_named_and_sized_by_config(stacks: Synthesized, config_dir: Path) -> None:
    for env in ("dev", "prod"):
        doc = stacks.json[env]
        (cluster,) = resources(doc, "azurerm_machine_learning_compute_cluster")
        assert cluster["name"] == load_config(env, config_dir).workspace.batch_compute == "cpu-cluster"
        assert cluster["machine_learning_workspace_id"].startswith("${azurerm_machine_learning_workspace.")
        assert cluster["scale_settings"]["min_node_count"] == 0
        assert cluster["node_public_ip_enabled"] is False  # dev: managed network; prod: our subnet
        assert doc["output"]["batch_compute_name"]["value"] == "cpu-cluster"
    (variant,) = resources(stacks.json["variant"], "azurerm_machine_learning_compute_cluster")
    assert (variant["name"], variant["vm_size"], variant["scale_settings"]["max_node_count"]) == (
        "batch-2",
        "Standard_D4s_v3",
        2,
    )


def test_bad_batch_compute_name_fails_before_synth_with_field_path(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "dev.yaml").read_text())
    raw["workspace"]["batch_compute"] = "cpu_cluster_for_all_experiments"
    (tmp_path / "dev.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ConfigError, match=r"dev\.yaml: workspace\.batch_compute: the Azure ML compute name 'cpu_"
    ):
        check(load_config("dev", tmp_path, example=True))


def test_app_insights_connection_string_secret_is_written_through_arm(stacks: Synthesized) -> None:
    for env in ("dev", "prod"):
        secret = _secrets(stacks.json[env])["appinsights-connection-string"]
        assert secret["parent_id"].startswith("${azurerm_key_vault.")
        value = secret["sensitive_body"]["properties"]["value"]
        assert value.startswith("${azurerm_application_insights.") and value.endswith(".connection_string}")
        assert "value" not in secret["body"]["properties"]  # write-only: not in state
        # a replaced App Insights (new id) re-sends its new connection string
        assert secret["sensitive_body_version"]["properties.value"].endswith(".id}")
        assert secret["body"]["properties"]["contentType"]


def test_connection_keys_become_write_only_secrets_for_app_service(stacks: Synthesized) -> None:
    dev = stacks.json["dev"]
    key = _secrets(dev)["aoai-api-key"]
    assert key["sensitive_body"] == {"properties": {"value": "${var.secret_aoai_api_key}"}}
    assert key["sensitive_body_version"] == {"properties.value": "1"}  # connections[0].key_version
    assert "value" not in key["body"]["properties"]
    assert CANARY not in json.dumps(dev)
    # prod has no App Service flow: no key is copied into the vault
    assert set(_secrets(stacks.json["prod"])) == {"appinsights-connection-string"}


def test_secret_names_match_what_the_release_code_references(stacks: Synthesized, config_dir: Path) -> None:
    from release.azure.names import app_insights_secret
    from release.targets.appservice import key_vault_reference

    cfg = load_config("dev", config_dir, example=True)
    written = set(_secrets(stacks.json["dev"]))
    assert set(stacks.json["dev"]["output"]["key_vault_secrets"]["value"]) == written
    referenced = [app_insights_secret(cfg)] + [
        c.secret.env for c in cfg.connections if isinstance(c.secret, EnvSecret)
    ]
    assert len(referenced) > 1
    for ref in referenced:
        uri = key_vault_reference(cfg, ref).removeprefix("@Microsoft.KeyVault(SecretUri=").removesuffix(")")
        assert uri.startswith(f"https://{naming.key_vault(cfg)}.vault.azure.net/secrets/")
        assert uri.rsplit("/", 1)[1] in written, ref


def test_web_app_and_slot_leave_settings_and_image_to_the_release(stacks: Synthesized) -> None:
    dev = stacks.json["dev"]
    sites = resources(dev, "azurerm_linux_web_app") + resources(dev, "azurerm_linux_web_app_slot")
    assert len(sites) == 2
    (vault,) = dev["resource"]["azurerm_key_vault"]
    for site in sites:
        assert site["lifecycle"]["ignore_changes"] == ["app_settings", "site_config[0].application_stack"]
        assert site["app_settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] == (
            f"@Microsoft.KeyVault(SecretUri=${{azurerm_key_vault.{vault}.vault_uri}}"
            "secrets/appinsights-connection-string)"
        )
