"""The typed environment config: shipped files load, every class of bad input is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from release.config import (
    ConfigError,
    EnvSecret,
    available_environments,
    load_config,
    load_config_file,
    resolve_secret,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def shipped(env: str) -> dict:
    return yaml.safe_load((REPO / "config" / f"{env}.yaml").read_text())


@pytest.mark.parametrize("env", ["local", "dev", "prod"])
def test_shipped_configs_load(env: str) -> None:
    cfg = load_config(env, environ={})
    assert cfg.environment == env
    assert cfg.kind == ("local" if env == "local" else "azure")
    assert set(cfg.flows) == {"web_classification", "support_triage"}
    for flow in cfg.flows.values():
        assert flow.release.steps[-1] == 100


def test_every_environment_file_is_listed() -> None:
    assert {"local", "dev", "prod"} <= set(available_environments())


def test_azure_configs_cover_every_cloud_target() -> None:
    targets = {
        flow.deployment.target
        for env in ("dev", "prod")
        for flow in load_config(env, environ={}).flows.values()
    }
    assert targets == {"managed", "appservice", "kubernetes"}


def test_vars_resolve_from_environment() -> None:
    cfg = load_config(
        "dev",
        environ={
            "AZURE_SUBSCRIPTION_ID": "12345678-1234-1234-1234-123456789abc",
            "AZURE_LOCATION": "swedencentral",
        },
    )
    assert cfg.azure is not None
    assert cfg.azure.subscription_id == "12345678-1234-1234-1234-123456789abc"
    assert cfg.azure.location == "swedencentral"


def test_missing_env_var_names_it(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["azure"]["subscription_id"] = "${MY_SUBSCRIPTION}"
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    message = str(err.value)
    assert "azure.subscription_id" in message
    assert "MY_SUBSCRIPTION is not set" in message
    assert str(path) in message


def test_out_of_range_step_names_field_path(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["web_classification"]["release"]["steps"] = [10, 50, 140]
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    assert f"{path}: flows.web_classification.release.steps[2]: 140 is not between 0 and 100" in str(
        err.value
    )


def test_wrong_type(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["web_classification"]["deployment"]["instance_count"] = "many"
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    message = str(err.value)
    assert "flows.web_classification.deployment.instance_count" in message
    assert "'many'" in message and "integer" in message


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["key_vault"]["authorisation"] = "rbac"  # British spelling: a typo that must not pass
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    assert "key_vault.authorisation: unknown key" in str(err.value)


def test_unknown_target_lists_allowed(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["web_classification"]["deployment"]["target"] = "lambda"
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    message = str(err.value)
    assert "flows.web_classification.deployment" in message
    for allowed in ("managed", "kubernetes", "appservice", "local"):
        assert allowed in message


def test_literal_lists_allowed_values(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["key_vault"]["authorization"] = "acl"
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    assert "key_vault.authorization: 'acl' is not allowed; expected 'rbac' or 'access_policies'" in str(
        err.value
    )


@pytest.mark.parametrize(
    "connection_patch",
    [
        {"secret": "sk-live-canary-0123456789"},
        {"api_key": "sk-live-canary-0123456789"},
        {"key": "sk-live-canary-0123456789"},
    ],
)
def test_secret_value_where_reference_belongs(tmp_path: Path, connection_patch: dict) -> None:
    doc = shipped("dev")
    connection = doc["connections"][0]
    connection.pop("secret", None)
    connection.update(connection_patch)
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    message = str(err.value)
    assert "connections[0]" in message
    assert "{env: VAR}" in message
    assert "sk-live-canary" not in message  # the error never echoes the secret


def test_bad_secret_reference_shape(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["connections"][0]["secret"] = {"vault": "kv", "name": "x"}
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    assert "connections[0].secret: must be {env: VAR} or {key_vault_secret: NAME}" in str(err.value)


def test_steps_must_increase_and_end_at_100(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["support_triage"]["release"]["steps"] = [50, 10]
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    assert "flows.support_triage.release" in str(err.value)
    assert "increase" in str(err.value)


def test_bad_guid_and_prefix(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["identities"]["deployer_object_id"] = "not-a-guid"
    doc["azure"]["name_prefix"] = "Bad_Prefix"
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError) as err:
        load_config_file(path, environ={})
    message = str(err.value)
    assert "identities.deployer_object_id: 'not-a-guid' is not a GUID" in message
    assert "azure.name_prefix: 'Bad_Prefix' must be 2-12 lowercase" in message


def test_local_target_refused_on_azure(tmp_path: Path) -> None:
    doc = shipped("dev")
    doc["flows"]["web_classification"]["deployment"] = {"target": "local"}
    path = write(tmp_path, "dev", doc)
    with pytest.raises(ConfigError, match="only for kind local"):
        load_config_file(path, environ={})


def test_file_name_and_environment_must_agree(tmp_path: Path) -> None:
    doc = shipped("dev")
    path = write(tmp_path, "staging", doc)
    with pytest.raises(ConfigError, match="does not match the file name"):
        load_config_file(path, environ={})


def test_missing_file_lists_environments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("qa")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("azure: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path, environ={})


def test_resolve_secret_reads_env_and_names_missing_var() -> None:
    assert resolve_secret(EnvSecret(env="CANARY_KEY"), environ={"CANARY_KEY": "v"}) == "v"
    with pytest.raises(ConfigError, match="CANARY_KEY is not set"):
        resolve_secret(EnvSecret(env="CANARY_KEY"), environ={})


def test_cli_reports_bad_config_with_exit_code(tmp_path: Path) -> None:
    """Through the real CLI process: one clear line, non-zero exit, no stack trace."""
    doc = shipped("local")
    doc["flows"]["web_classification"]["release"]["max_error_rate"] = 3
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [sys.executable, "-m", "release", "config", "validate", "--env", "local"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "GENAIOPS_CONFIG_DIR": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 2
    assert "flows.web_classification.release.max_error_rate: 3.0 is not between 0.0 and 1.0" in result.stderr
    assert "Traceback" not in result.stderr
