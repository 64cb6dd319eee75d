"""infra/terraform.py against the rehearsal's terraform stand-in: init before apply, lock file,
pinned version, and the encrypted plan (pipelines.md 1-2, azure-first-contact H7, M9)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import plan_crypto, terraform
from release.errors import UserError

_HERE = Path(__file__).resolve().parent
PLAN_KEY = "k" * 40
STATE_SECRET = "storage-key-CANARY-5d1e"
GROUP = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-0000000000aa",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-0000000000bb",
    "DEPLOYER_OBJECT_ID": "00000000-0000-0000-0000-0000000000cc",
    "AOAI_ENDPOINT": "https://x.openai.azure.com/",
    "AOAI_API_KEY": "aoai-CANARY",
}


def _rehearsal() -> Any:
    name = "genaiops_tests_rehearsal"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HERE / "rehearsal.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def tf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The terraform stand-in at the pinned version on PATH, a stack folder, a fake backend."""
    rh = _rehearsal()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rh._install_shim("terraform", bin_dir / "terraform", terraform.pinned_version())
    backend = tmp_path / "backend"
    state = backend / "sa" / "tfstate" / "dev.tfstate"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"serial": 3, "secrets": {"primary_access_key": STATE_SECRET}}))
    log = tmp_path / "calls.jsonl"
    log.touch()
    stack = tmp_path / "plan-job" / "stacks" / "dev"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text(
        json.dumps(
            {
                "terraform": {
                    "backend": {
                        "azurerm": {
                            "storage_account_name": "sa",
                            "container_name": "tfstate",
                            "key": "dev.tfstate",
                        }
                    },
                    "required_providers": {"azurerm": {"source": "hashicorp/azurerm", "version": "4.55.0"}},
                },
                "resource": {"azurerm_resource_group": {"rg": {}}},
            }
        )
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    for key, value in {
        **GROUP,
        "REHEARSAL_LOG": str(log),
        "REHEARSAL_BACKEND": str(backend),
        "ARM_USE_OIDC": "true",
        "ARM_CLIENT_ID": "c",
        "ARM_TENANT_ID": "t",
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "r",
        "GITHUB_ACTIONS": "true",
        "GENAIOPS_PLAN_KEY": PLAN_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TF_BUILD", raising=False)
    from release.config import load_config

    return {"stack": stack, "log": log, "cfg": load_config("dev"), "binary": str(bin_dir / "terraform")}


def _events(log: Path) -> list[str]:
    return [json.loads(line).get("event") or "error" for line in log.read_text().splitlines()]


def _artifact(stack: Path, target: Path) -> Path:
    """What the CI artifact carries: the stack folder minus `.artifactignore` (as Azure publishes)."""
    ignore = [p for p in (stack / ".artifactignore").read_text().splitlines() if p]
    rh = _rehearsal()
    rh._copy_tree(stack, target, lambda rel: rh._ignored(rel, ignore))
    return target


def test_plan_encrypts_in_ci_and_apply_inits_then_applies_that_plan(
    tf: dict[str, Any], tmp_path: Path
) -> None:
    binary = terraform.preflight()
    summary = terraform.plan(tf["cfg"], tf["stack"], binary)
    assert "1 to add" in summary and "encrypted" in summary
    stack = tf["stack"]
    assert not (stack / "plan.tfplan").exists() and (stack / "plan.tfplan.enc").is_file()
    for path in stack.rglob("*"):
        if path.is_file():
            assert STATE_SECRET.encode() not in path.read_bytes() or path.name == "plan.tfplan", path
    artifact = _artifact(stack, tmp_path / "apply-job" / "stacks" / "dev")
    names = {p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file()}
    assert names == {
        "cdk.tf.json",
        ".terraform.lock.hcl",
        "plan.tfplan.enc",
        "plan-summary.txt",
        ".artifactignore",
    }
    before = len(_events(tf["log"]))
    terraform.apply(tf["cfg"], artifact, terraform.preflight())
    assert _events(tf["log"])[before:] == ["version", "init", "apply"]
    assert not (artifact / "plan.tfplan").exists() and not (artifact / "plan.tfplan.enc").exists()
    calls = [json.loads(line) for line in tf["log"].read_text().splitlines()]
    planned = next(c for c in calls if c.get("event") == "plan")["sha256"]
    assert next(c for c in calls if c.get("event") == "apply")["plan_sha256"] == planned
    assert "-lockfile=readonly" in next(c for c in calls[before:] if c.get("event") == "init")["argv"]


def test_apply_refuses_a_plan_without_its_lock_file(tf: dict[str, Any], tmp_path: Path) -> None:
    terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())
    artifact = _artifact(tf["stack"], tmp_path / "apply" / "dev")
    (artifact / ".terraform.lock.hcl").unlink()  # what upload-artifact does without include-hidden-files
    with pytest.raises(UserError, match="include-hidden-files"):
        terraform.apply(tf["cfg"], artifact, terraform.preflight())


def test_apply_refuses_the_wrong_key_and_leaves_no_plaintext(
    tf: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())
    artifact = _artifact(tf["stack"], tmp_path / "apply" / "dev")
    monkeypatch.setenv("GENAIOPS_PLAN_KEY", "another-key-" + "x" * 30)
    with pytest.raises(UserError, match="cannot be decrypted"):
        terraform.apply(tf["cfg"], artifact, terraform.preflight())
    assert not (artifact / "plan.tfplan").exists()
    assert "apply" not in _events(tf["log"])


def test_plan_in_ci_without_a_key_stops_before_terraform(
    tf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENAIOPS_PLAN_KEY")
    with pytest.raises(UserError, match="GENAIOPS_PLAN_KEY is not set"):
        terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())
    assert "init" not in _events(tf["log"])
    monkeypatch.setenv("GENAIOPS_PLAN_KEY", "short")
    with pytest.raises(UserError, match="at least 32"):
        terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())


def test_plan_outside_ci_keeps_a_plain_plan_that_apply_uses(
    tf: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS")
    monkeypatch.delenv("GENAIOPS_PLAN_KEY")
    terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())
    assert (tf["stack"] / "plan.tfplan").is_file()
    terraform.apply(tf["cfg"], tf["stack"], terraform.preflight())
    assert not (tf["stack"] / "plan.tfplan").exists()


def test_preflight_requires_the_pinned_version_in_ci(
    tf: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    _rehearsal()._install_shim("terraform", other / "terraform", "1.11.0")
    monkeypatch.setenv("PATH", f"{other}:/usr/bin:/bin")
    with pytest.raises(UserError, match=r"pins " + terraform.pinned_version().replace(".", r"\.")):
        terraform.preflight()
    monkeypatch.delenv("GITHUB_ACTIONS")
    terraform.preflight()  # on a laptop: a warning only
    assert "warning: terraform 1.11.0" in capsys.readouterr().err


def test_pinned_version_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".terraform-version"
    path.write_text("latest\n")
    with pytest.raises(UserError, match=r"\.terraform-version: 'latest' is not an exact version"):
        terraform.pinned_version(path)
    path.write_text("1.9.8\n")
    with pytest.raises(UserError, match=r"older than the 1\.11"):
        terraform.pinned_version(path)


def test_encrypted_plan_detects_tampering(tmp_path: Path) -> None:
    plain = tmp_path / "p"
    plain.write_bytes(b"plan with " + STATE_SECRET.encode())
    plan_crypto.encrypt_file(plain, tmp_path / "p.enc", PLAN_KEY)
    data = bytearray((tmp_path / "p.enc").read_bytes())
    assert STATE_SECRET.encode() not in data
    assert (tmp_path / "p.enc").stat().st_mode & 0o777 == 0o600
    plan_crypto.decrypt_file(tmp_path / "p.enc", tmp_path / "back", PLAN_KEY)
    assert (tmp_path / "back").read_bytes() == plain.read_bytes()
    data[-5] ^= 1
    (tmp_path / "p.enc").write_bytes(bytes(data))
    with pytest.raises(UserError, match="modified"):
        plan_crypto.decrypt_file(tmp_path / "p.enc", tmp_path / "back", PLAN_KEY)


def test_the_shim_refuses_apply_without_init(tf: dict[str, Any]) -> None:
    """The stand-in behaves like terraform: a fresh folder must be initialised first."""
    import subprocess

    terraform.plan(tf["cfg"], tf["stack"], terraform.preflight())
    shutil.rmtree(tf["stack"] / ".terraform")
    proc = subprocess.run(
        [tf["binary"], f"-chdir={tf['stack']}", "apply", "-input=false", "plan.tfplan"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and 'run "terraform init"' in proc.stderr
