"""The CLI end to end: synth/scan/plan/apply as a user runs them (real checkov, real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from release.config import CONFIG_DIR, REPO_ROOT
from tests.infra.conftest import CANARY, Synthesized


def genaiops(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "release.cli", *args],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def scans(stacks: Synthesized, config_dir: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """`genaiops scan --skip-synth` on dev, prod and insecure, run side by side."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GENAIOPS_CDKTF_OUT": str(stacks.out)}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "release.cli", "scan", "--env", name, "--skip-synth"],
            cwd=REPO_ROOT,
            env={**env, "GENAIOPS_CONFIG_DIR": str(config_dir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("dev", "prod", "private", "variant", "insecure")
    }
    results = {}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def test_scan_passes_for_dev_and_prod_under_both_profiles(
    scans: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    # dev: public, prod: private, private: dev under the private profile, variant: prod under public
    for env in ("dev", "prod", "private", "variant"):
        proc = scans[env]
        assert proc.returncode == 0, proc.stderr
        assert f"scan {env}:" in proc.stdout and " 0 failed" in proc.stdout


def test_scan_fails_on_insecure_config_and_names_the_checks(
    scans: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    proc = scans["insecure"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = {line.split()[1] for line in proc.stderr.splitlines() if line.strip().startswith("FAILED")}
    assert {
        "CKV_AZURE_189",  # Key Vault public network access
        "CKV_AZURE_137",  # ACR admin user
        "CKV2_GENAIOPS_2",  # endpoint key auth where the workspace requires AAD
        "CKV2_GENAIOPS_5",  # role assignment at subscription scope
        "CKV2_GENAIOPS_6",  # Contributor
    } <= failed, proc.stderr
    assert "test_only_subscription_contributor" in proc.stderr


def test_bad_config_fails_before_synth_with_field_path(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "dev.yaml").read_text())
    raw["key_vault"]["soft_delete_retention_days"] = 3
    configs = tmp_path / "config"
    configs.mkdir()
    (configs / "dev.yaml").write_text((CONFIG_DIR / "dev.yaml").read_text())
    (configs / "bad.yaml").write_text(yaml.safe_dump({**raw, "environment": "bad"}))
    out = tmp_path / "out"
    proc = genaiops("synth", env={"GENAIOPS_CONFIG_DIR": str(configs), "GENAIOPS_CDKTF_OUT": str(out)})
    assert proc.returncode == 2
    assert "bad.yaml: key_vault.soft_delete_retention_days" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-done: not even the valid dev stack


def test_stack_check_names_the_field_before_synth(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "prod.yaml").read_text())
    raw["flows"]["support_triage"]["deployment"]["aks_cluster_id"] = "my-cluster"
    (tmp_path / "prod.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    proc = genaiops(
        "synth", "--env", "prod", env={"GENAIOPS_CONFIG_DIR": str(tmp_path), "GENAIOPS_CDKTF_OUT": str(out)}
    )
    assert proc.returncode == 2
    assert "prod.yaml: flows.support_triage.deployment.aks_cluster_id" in proc.stderr
    assert not out.exists()


def test_local_has_no_cloud_stack(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = genaiops("synth", "--env", "local", env={"GENAIOPS_CDKTF_OUT": str(out)})
    assert proc.returncode == 0
    assert "no cloud stack" in proc.stdout
    for command in ("scan", "plan", "apply"):
        proc = genaiops(command, "--env", "local", env={"GENAIOPS_CDKTF_OUT": str(out)})
        assert proc.returncode != 0
        assert "has no cloud stack" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


REAL = {  # what an ops engineer exports (docs/first-deployment.md); not the example values
    "GENAIOPS_EXAMPLE": "0",
    "AZURE_SUBSCRIPTION_ID": "3f2c1a9e-0b1d-4c55-9a77-1e2d3c4b5a69",
    "AZURE_TENANT_ID": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "GENAIOPS_NAME_PREFIX": "acme",
    "TFSTATE_RESOURCE_GROUP": "acme-tfstate-rg",
    "TFSTATE_STORAGE_ACCOUNT": "acmetfstate01",
    "DEPLOYER_OBJECT_ID": "5b0e8c0e-4a5e-4a53-9d5c-6c1f3f2f9a10",
    "PROD_DEPLOYER_OBJECT_ID": "9d8e7f6a-1b2c-4d3e-8f9a-0b1c2d3e4f5a",
    "AOAI_ENDPOINT": "https://acme-aoai.openai.azure.com/",
    "AOAI_RESOURCE_ID": (
        "/subscriptions/3f2c1a9e-0b1d-4c55-9a77-1e2d3c4b5a69/resourceGroups/acme-ai-rg/providers/"
        "Microsoft.CognitiveServices/accounts/acme-aoai"
    ),
    "AOAI_DEPLOYMENT": "gpt-4o-mini",
}


def test_plan_refuses_example_values_naming_each_variable(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for command in ("plan", "apply"):
        proc = genaiops(
            command, "--env", "dev", env={"GENAIOPS_CDKTF_OUT": str(out), "GENAIOPS_EXAMPLE": "1"}
        )
        assert proc.returncode == 2, proc.stderr
        for variable in ("AZURE_SUBSCRIPTION_ID", "DEPLOYER_OBJECT_ID", "TFSTATE_STORAGE_ACCOUNT"):
            assert f"${variable} is not set (example mode filled in" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists()  # refused before synth
    proc = genaiops("config", "validate", "--env", "dev", env={"GENAIOPS_EXAMPLE": "0"})
    assert proc.returncode == 2 and "environment variable AZURE_SUBSCRIPTION_ID is not set" in proc.stderr


def test_plan_stops_clearly_after_synth_and_scan_without_credentials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARM_")}
    clean.update(
        {
            **REAL,
            "GENAIOPS_CDKTF_OUT": str(out),
            "AZURE_CONFIG_DIR": str(tmp_path / "no-az"),
            "AOAI_API_KEY": CANARY,
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "release.cli", "plan", "--env", "dev"],
        cwd=REPO_ROOT,
        env={**clean, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode != 0
    assert "scan dev: " in proc.stdout and " 0 failed" in proc.stdout, proc.stdout + proc.stderr
    assert "synth and scan passed, but" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "stacks" / "dev" / "plan.tfplan").exists()
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert CANARY not in path.read_text(errors="replace"), path
    proc = genaiops("apply", "--env", "dev", env={**REAL, "GENAIOPS_CDKTF_OUT": str(out)})
    assert proc.returncode != 0 and "run `make plan ENV=dev` first" in proc.stderr
