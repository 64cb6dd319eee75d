"""Policy file hygiene, the plan summary and secret passing (no terraform needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra import terraform
from infra.scan import CHECKS_DIR, policy_file
from release.config import CONFIG_DIR, load_config
from release.errors import UserError


@pytest.mark.parametrize("profile", ["public", "private"])
def test_every_skipped_check_has_a_reason(profile: str) -> None:
    text = policy_file(profile).read_text()
    skips = yaml.safe_load(text)["skip-check"]
    assert skips
    for check in skips:
        (line,) = [ln for ln in text.splitlines() if re.match(rf"\s*-\s*{check}\s", ln)]
        reason = line.split("#", 1)[1].strip() if "#" in line else ""
        assert len(reason) > 20, f"{check} is skipped without a reason"
    # never skipped in either profile: ACR admin user, endpoint auth, privileged/broad grants
    for required in ("CKV_AZURE_137", "CKV2_GENAIOPS_2", "CKV2_GENAIOPS_5", "CKV2_GENAIOPS_6"):
        assert required not in skips
    if profile == "private":  # network exposure is never skipped for the private profile
        for required in ("CKV_AZURE_189", "CKV_AZURE_144", "CKV_AZURE_139", "CKV2_AZURE_32", "CKV2_AZURE_33"):
            assert required not in skips


def test_public_profile_skips_only_exposure_it_is_meant_to_have() -> None:
    public = set(yaml.safe_load(policy_file("public").read_text())["skip-check"])
    private = set(yaml.safe_load(policy_file("private").read_text())["skip-check"])
    extra = public - private
    assert extra == {
        "CKV_AZURE_189",
        "CKV_AZURE_109",
        "CKV2_AZURE_32",
        "CKV_AZURE_139",
        "CKV_AZURE_144",
        "CKV2_AZURE_49",
        "CKV_AZURE_59",
        "CKV_AZURE_35",
        "CKV2_AZURE_33",
        "CKV_AZURE_222",
        "CKV2_GENAIOPS_1",
    }
    assert "CKV_AZURE_97" in private - public  # the agent scale set exists only in private


def test_custom_checks_cover_azapi_resources() -> None:
    ids = set()
    for path in CHECKS_DIR.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        ids.add(doc["metadata"]["id"])
    assert {f"CKV2_GENAIOPS_{i}" for i in range(1, 7)} <= ids


def test_plan_summary_counts_per_resource_type() -> None:
    plan = {
        "resource_changes": [
            {"type": "azurerm_role_assignment", "change": {"actions": ["create"]}},
            {"type": "azurerm_role_assignment", "change": {"actions": ["create"]}},
            {"type": "azapi_resource", "change": {"actions": ["update"]}},
            {"type": "azurerm_key_vault", "change": {"actions": ["delete", "create"]}},
            {"type": "azurerm_storage_account", "change": {"actions": ["delete"]}},
            {"type": "azurerm_resource_group", "change": {"actions": ["no-op"]}},
        ]
    }
    summary = terraform.summarize(plan)
    lines = summary.splitlines()
    assert lines[0] == "plan: 2 to add, 1 to change, 1 to replace, 1 to destroy"
    assert any(re.match(r"\s+azurerm_role_assignment\s+2 to add$", ln) for ln in lines)
    assert any(re.match(r"\s+azapi_resource\s+1 to change$", ln) for ln in lines)
    assert any(re.match(r"\s+azurerm_key_vault\s+1 to replace$", ln) for ln in lines)
    assert not any("azurerm_resource_group" in ln for ln in lines)
    assert terraform.summarize({"resource_changes": []}) == "plan: no changes"


def test_connection_keys_go_to_tf_vars_only_from_the_environment() -> None:
    cfg = load_config("dev", CONFIG_DIR, example=True)
    assert terraform.secret_variables(cfg, {"AOAI_API_KEY": "k"}) == {"TF_VAR_secret_aoai_api_key": "k"}
    with pytest.raises(
        UserError, match=r"dev.yaml: connections\[0\]\.secret\.env: \$AOAI_API_KEY is not set"
    ):
        terraform.secret_variables(cfg, {})


def test_credentials_detection() -> None:
    assert terraform.azure_credentials({"ARM_CLIENT_ID": "x", "ARM_OIDC_TOKEN": "t"}) is not None
    assert "ARM_CLIENT_SECRET" in str(
        terraform.azure_credentials({"ARM_CLIENT_ID": "x", "ARM_CLIENT_SECRET": "s"})
    )


def test_preflight_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no terraform, no az
    with pytest.raises(UserError, match="synth and scan passed, but `terraform` is not on PATH"):
        terraform.preflight({})
