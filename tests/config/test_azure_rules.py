"""Azure's own rules as config validation (infra/validate.py, release/azure/names.py) and the
example mode / placeholder refusal (release/config.py). No CDKTF, no synth: all fast."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import naming
from infra.validate import check
from release.config import (
    EXAMPLE_VALUES,
    ConfigError,
    EnvironmentConfig,
    load_config,
    load_config_file,
    require_deployable,
)

REPO = Path(__file__).resolve().parents[2]
SUB = "3f2c1a9e-0b1d-4c55-9a77-1e2d3c4b5a69"


def shipped(env: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / f"{env}.yaml").read_text())


def load(tmp_path: Path, doc: dict[str, Any], name: str | None = None, **environ: str) -> EnvironmentConfig:
    name = name or doc["environment"]
    doc = {**doc, "environment": name}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config_file(path, environ=environ, example=True)


def problems(tmp_path: Path, doc: dict[str, Any], name: str | None = None) -> str:
    cfg = load(tmp_path, doc, name)
    with pytest.raises(ConfigError) as err:
        check(cfg, file=f"config/{cfg.environment}.yaml")
    return str(err.value)


# --------------------------------------------------------------------------- example mode


def test_nothing_set_is_an_error_naming_every_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("prod", environ={}, example=False)
    message = str(err.value)
    for variable, field in (
        ("AZURE_SUBSCRIPTION_ID", "azure.subscription_id"),
        ("AZURE_TENANT_ID", "azure.tenant_id"),
        ("GENAIOPS_NAME_PREFIX", "azure.name_prefix"),
        ("TFSTATE_STORAGE_ACCOUNT", "state.storage_account"),
        ("DEPLOYER_OBJECT_ID", "identities.deployer_object_id"),
        ("AOAI_ENDPOINT", "connections[0].target"),
        ("AKS_CLUSTER_ID", "flows.web_classification.deployment.aks_cluster_id"),
        ("AGENT_SSH_PUBLIC_KEY", "network.agent_pool.ssh_public_key"),
    ):
        assert f"config/prod.yaml: {field}: environment variable {variable} is not set" in message
    assert "GENAIOPS_EXAMPLE=1" in message


def test_example_mode_fills_documented_values_and_real_commands_refuse_them() -> None:
    cfg = load_config(
        "dev", environ={"AZURE_TENANT_ID": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}, example=True
    )
    assert cfg.azure is not None and cfg.azure.subscription_id == EXAMPLE_VALUES["AZURE_SUBSCRIPTION_ID"]
    assert cfg.azure.tenant_id == "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"  # a set variable wins
    assert "AZURE_TENANT_ID" not in cfg.example_vars
    assert cfg.example_vars["AZURE_SUBSCRIPTION_ID"] == "azure.subscription_id"
    with pytest.raises(ConfigError) as err:
        require_deployable(cfg, "plan")
    message = str(err.value)
    assert "config/dev.yaml: azure.subscription_id: $AZURE_SUBSCRIPTION_ID is not set" in message
    assert "identities.deployer_object_id: $DEPLOYER_OBJECT_ID is not set" in message
    assert "azure.tenant_id" not in message


def test_placeholder_defaults_are_refused_before_azure(tmp_path: Path) -> None:
    """A config like case 09's, whose ${VAR:-0000...} defaults hide that nothing was set."""
    doc = shipped("dev")
    doc["azure"]["subscription_id"] = "${AZURE_SUBSCRIPTION_ID:-00000000-0000-0000-0000-000000000000}"
    cfg = load(tmp_path, doc, AZURE_TENANT_ID="7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    with pytest.raises(
        ConfigError, match=r"azure\.subscription_id: 00000000-0000-0000-0000-000000000000 is a placeholder"
    ):
        require_deployable(cfg)


def test_a_fully_set_config_is_deployable() -> None:
    environ = {name: value for name, value in EXAMPLE_VALUES.items()}
    environ.update(
        AZURE_SUBSCRIPTION_ID=SUB,
        AZURE_TENANT_ID="7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        DEPLOYER_OBJECT_ID="5b0e8c0e-4a5e-4a53-9d5c-6c1f3f2f9a10",
        GENAIOPS_NAME_PREFIX="acme",
    )
    cfg = load_config("prod", environ=environ, example=False)
    assert require_deployable(cfg) is cfg
    check(cfg)


# --------------------------------------------------------------------------- network profiles


def test_profile_defaults_and_shorthand(tmp_path: Path) -> None:
    dev, prod = load_config("dev", example=True), load_config("prod", example=True)
    assert dev.network_profile == "public" and prod.network_profile == "private"
    assert dev.registry.public_network_access and dev.key_vault.public_network_access
    assert not prod.registry.public_network_access and not prod.workspace.public_network_access
    doc = shipped("dev")
    doc.pop("network")
    assert load(tmp_path, doc, "staging").network_profile == "public"  # not prod: public
    doc["network"] = "private"  # shorthand
    cfg = load(tmp_path, doc, "staging")
    assert cfg.network is not None and cfg.network.profile == "private"
    assert cfg.flows["web_classification"].deployment.public_network_access is False  # type: ignore[union-attr]


# --------------------------------------------------------------------------- Azure's rules


def _rule(message: str, field: str, url: str) -> None:
    line = next((ln for ln in message.splitlines() if f": {field}:" in ln), "")
    assert line.startswith("config/"), message
    assert url in line, line


def test_kubernetes_with_aad_token_is_refused(tmp_path: Path) -> None:
    doc = shipped("prod")
    doc["flows"]["support_triage"]["deployment"]["auth_mode"] = "aad_token"
    _rule(
        problems(tmp_path, doc),
        "flows.support_triage.deployment.auth_mode",
        "concept-endpoints-online-auth#limitation",
    )


def test_kubernetes_in_a_managed_network_is_refused(tmp_path: Path) -> None:
    doc = shipped("prod")
    doc["workspace"]["managed_network"]["isolation"] = "allow_only_approved_outbound"
    message = problems(tmp_path, doc)
    _rule(message, "flows.web_classification.deployment.target", "how-to-managed-network#limitations")
    _rule(message, "flows.support_triage.deployment.target", "how-to-managed-network#limitations")


def test_quarantine_without_a_scanner_is_refused(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["registry"]["quarantine"] = True
    _rule(problems(tmp_path, doc), "registry.quarantine", "Azure/acr/blob/main/docs/preview/quarantine")
    doc["registry"]["quarantine_scanner"] = "Defender for Containers gate"
    check(load(tmp_path, doc))


def test_approved_outbound_connection_without_a_rule_is_refused(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["network"] = {
        "profile": "private",
        "agent_pool": {"name": "p", "ssh_public_key": "${AGENT_SSH_PUBLIC_KEY}"},
    }
    doc["workspace"]["managed_network"]["isolation"] = "allow_only_approved_outbound"
    doc["connections"][0].pop("resource_id")
    message = problems(tmp_path, doc)
    _rule(message, "connections[0].resource_id", "how-to-managed-network#scenario-use-prompt-flow")
    assert "has no outbound rule" in message
    doc["network"]["egress_fqdns"] = ["gaops-example-aoai.openai.azure.com"]  # an FQDN rule instead
    check(load(tmp_path, doc))


def test_private_profile_without_an_agent_pool_is_refused(tmp_path: Path) -> None:
    doc = shipped("prod")
    doc["network"].pop("agent_pool")
    _rule(problems(tmp_path, doc), "network.agent_pool", "scale-set-agents")


def test_private_registry_with_an_app_service_without_vnet_pull_is_refused(tmp_path: Path) -> None:
    doc = shipped("dev")  # public profile: App Service has no VNet integration
    doc["registry"]["public_network_access"] = False
    doc["key_vault"]["public_network_access"] = False
    message = problems(tmp_path, doc)
    assert "configure-custom-container#use-an-image-from-a-network-protected-registry" in message
    assert "app-service-key-vault-references" in message
    assert "flows.support_triage.deployment.target" in message


def test_managed_endpoint_without_a_managed_network_in_private_profile_is_refused(tmp_path: Path) -> None:
    doc = shipped("prod")
    doc["flows"]["web_classification"]["deployment"] = {"target": "managed"}
    _rule(
        problems(tmp_path, doc),
        "flows.web_classification.deployment.target",
        "concept-secure-online-endpoint",
    )


def test_subnets_must_fit_the_address_space(tmp_path: Path) -> None:
    doc = shipped("prod")
    doc["network"]["subnets"] = {"agents": "10.50.0.0/24", "compute": "10.40.1.128/25"}
    message = problems(tmp_path, doc)
    assert "network.subnets.agents: 10.50.0.0/24 is outside network.address_space 10.40.0.0/16" in message
    assert "network.subnets.compute: 10.40.1.128/25 overlaps subnets.private_endpoints" in message


# --------------------------------------------------------------------------- names


def test_truncated_endpoint_names_that_collide_are_refused(tmp_path: Path) -> None:
    """Case 09: both derived names are cut to the same 32 characters."""
    doc = shipped("dev")
    flow = doc["flows"].pop("web_classification")
    doc["flows"] = {"invoice_classification_emea": flow, "invoice_classification_apac": dict(flow)}
    message = problems(tmp_path, doc, "uat")
    assert (
        "flows.invoice_classification_emea and flows.invoice_classification_apac derive the same" in message
    )
    assert "'gaops-uat-invoice-classification'" in message and "unique" in message
    assert "deployment.endpoint_name" in message


def test_qa_environment_never_yields_a_name_ending_in_a_dash(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"] = {"invoice_classification_emea": doc["flows"]["web_classification"]}
    cfg = load(tmp_path, doc, "qa")
    check(cfg)
    name = cfg.endpoint_name("invoice_classification_emea")
    assert name == "gaops-qa-invoice-classification" and not name.endswith("-")


@pytest.mark.parametrize("env", ["qa", "uat", "dev2", "perf", "stage", "preprod", "sandbox", "x", "a-b"])
def test_any_environment_name_yields_valid_names_or_a_clear_error(tmp_path: Path, env: str) -> None:
    from release.azure.names import RULES, derived_names

    cfg = load(tmp_path, shipped("dev"), env)
    try:
        check(cfg)
    except ConfigError as err:  # refused up front: file, field, rule URL
        assert re.search(rf"config/{env}\.yaml: .+ Rule: https://", str(err)), str(err)
        return
    for item in derived_names(cfg):
        assert RULES[item.rule].problem(item.name) is None, item


def test_long_environment_name_is_refused_naming_field_and_rule(tmp_path: Path) -> None:
    message = problems(tmp_path, shipped("dev"), "integration-environment-for-team-a")
    assert (
        "config/integration-environment-for-team-a.yaml: azure.name_prefix or the environment name" in message
    )
    assert "resource-name-rules" in message


def test_bad_explicit_names_name_the_flow_and_field(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["support_triage"]["deployment"]["slot"] = "-staging"
    doc["flows"]["web_classification"]["deployment"]["endpoint_name"] = "9lives"
    message = problems(tmp_path, doc)
    assert (
        "flows.support_triage.deployment.slot: the deployment slot name '-staging' (flow support_triage)"
        in message
    )
    assert "flows.web_classification.deployment.endpoint_name: the online endpoint name '9lives'" in message


def test_globally_unique_names_do_not_collide_between_teams(tmp_path: Path) -> None:
    a = load(tmp_path, shipped("dev"), AZURE_SUBSCRIPTION_ID=SUB)
    b = load(tmp_path, shipped("dev"), AZURE_SUBSCRIPTION_ID="0c9a2f3e-1111-4b2b-9c3c-2d3e4f5a6b7c")
    for derive in (naming.storage_account, naming.container_registry, naming.key_vault):
        assert derive(a) != derive(b)  # same prefix, other subscription: another suffix
        assert derive(a) == derive(load(tmp_path, shipped("dev"), AZURE_SUBSCRIPTION_ID=SUB))  # stable
