"""``terraform init/plan/apply`` on a synthesized stack, and the human plan summary.

Runs only where a terraform binary (>= 1.11) and Azure credentials exist; otherwise
:func:`preflight` raises a :class:`UserError` that says what is missing.
Connection keys are passed as ``TF_VAR_secret_<var>`` in the child's environment only.

The Terraform version is pinned in ONE place, ``.terraform-version`` at the repository root
(read by the Azure DevOps and GitHub pipelines' installer steps and by :func:`preflight`; a saved
plan can only be applied by the Terraform version that wrote it).

What the apply stage needs from the plan stage (the CI artifact, see :data:`ARTIFACT_IGNORE`):
``cdk.tf.json``, ``.terraform.lock.hcl`` (provider checksums) and the saved plan, encrypted as
``plan.tfplan.enc`` in CI (``infra/plan_crypto.py``). Never ``.terraform/``: artifacts lose file
modes, and provider binaries are re-initialised by ``terraform init`` against the same backend
before apply (https://developer.hashicorp.com/terraform/cli/init).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra import naming, plan_crypto
from release.config import EnvironmentConfig, EnvSecret, config_path
from release.errors import CheckFailed, UserError

MIN_VERSION = (1, 11)
VERSION_FILE = Path(__file__).resolve().parents[1] / ".terraform-version"
PLAN_FILE = "plan.tfplan"
ENCRYPTED_PLAN_FILE = PLAN_FILE + ".enc"
LOCK_FILE = ".terraform.lock.hcl"
SUMMARY_FILE = "plan-summary.txt"
# Azure Pipelines' PublishPipelineArtifact honours `.artifactignore` in the published folder;
# the GitHub workflow lists the same two exclusions in upload-artifact's `path`.
ARTIFACT_IGNORE = (".terraform/", PLAN_FILE)
INIT_TIMEOUT = 900
PLAN_TIMEOUT = 1800
APPLY_TIMEOUT = 7200
AZ_TIMEOUT = 30
_CREDENTIAL_SETS = (
    ("ARM_CLIENT_ID", "ARM_CLIENT_SECRET"),
    ("ARM_CLIENT_ID", "ARM_CLIENT_CERTIFICATE_PATH"),
    ("ARM_CLIENT_ID", "ARM_OIDC_TOKEN"),
    ("ARM_CLIENT_ID", "ARM_OIDC_TOKEN_FILE_PATH"),
    ("ARM_CLIENT_ID", "ARM_OIDC_REQUEST_TOKEN"),
    ("ARM_CLIENT_ID", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"),  # GitHub OIDC (ARM_USE_OIDC)
    ("ARM_USE_MSI",),
)


def terraform_binary() -> str | None:
    return shutil.which("terraform")


def terraform_version(binary: str) -> tuple[int, int]:
    proc = subprocess.run(
        [binary, "version", "-json"], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        version = str(json.loads(proc.stdout)["terraform_version"])
        major, minor = (int(x) for x in version.split(".")[:2])
    except (ValueError, KeyError, json.JSONDecodeError):
        raise UserError(f"could not read `{binary} version -json`: {proc.stderr.strip()[:200]}") from None
    return major, minor


def pinned_version(path: Path = VERSION_FILE) -> str:
    """The Terraform version every pipeline installs, from ``.terraform-version`` (e.g. "1.11.4")."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        raise UserError(f"{path} is missing: it pins the Terraform version (e.g. 1.11.4)") from None
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UserError(f"{path}: {text!r} is not an exact version MAJOR.MINOR.PATCH (e.g. 1.11.4)")
    if (int(parts[0]), int(parts[1])) < MIN_VERSION:
        raise UserError(
            f"{path}: {text} is older than the {MIN_VERSION[0]}.{MIN_VERSION[1]} this stack needs"
        )
    return text


def full_version(binary: str) -> str:
    proc = subprocess.run(
        [binary, "version", "-json"], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        return str(json.loads(proc.stdout)["terraform_version"])
    except (KeyError, json.JSONDecodeError):
        raise UserError(f"could not read `{binary} version -json`: {proc.stderr.strip()[:200]}") from None


def azure_credentials(environ: Mapping[str, str]) -> str | None:
    """How terraform would authenticate (a description, never a secret), or None."""
    for names in _CREDENTIAL_SETS:
        if all(environ.get(n) for n in names):
            return "environment (" + ", ".join(names) + ")"
    az = shutil.which("az")
    if az:
        try:
            proc = subprocess.run(
                [az, "account", "show", "-o", "none"],
                capture_output=True,
                timeout=AZ_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if proc.returncode == 0:
            return "Azure CLI login (az account show)"
    return None


def preflight(environ: Mapping[str, str] | None = None) -> str:
    """Return the terraform binary, or explain what is missing (after synth and scan passed)."""
    environ = os.environ if environ is None else environ
    binary = terraform_binary()
    if binary is None:
        raise UserError(
            "synth and scan passed, but `terraform` is not on PATH: install Terraform >= "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} to plan/apply (nothing was planned)"
        )
    found = full_version(binary)
    try:
        version = (int(found.split(".")[0]), int(found.split(".")[1]))
    except (IndexError, ValueError):
        raise UserError(f"`{binary} version -json` reported {found!r}, not a version") from None
    if version < MIN_VERSION:
        raise UserError(
            f"synth and scan passed, but terraform {version[0]}.{version[1]} is too old: "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is needed (ephemeral variables)"
        )
    pinned = pinned_version()
    if found != pinned:
        message = (
            f"terraform {found} is on PATH but {VERSION_FILE.name} pins {pinned}: install {pinned} "
            "(the pipelines do; a saved plan applies only with the version that wrote it)"
        )
        if plan_crypto.running_in_ci(environ):
            raise UserError(message)
        print(f"warning: {message}", file=sys.stderr)
    if azure_credentials(environ) is None:
        raise UserError(
            "synth and scan passed, but no Azure credentials were found: set ARM_CLIENT_ID with "
            "ARM_CLIENT_SECRET / ARM_OIDC_TOKEN / ARM_CLIENT_CERTIFICATE_PATH (and ARM_TENANT_ID, "
            "ARM_SUBSCRIPTION_ID), or run `az login` (nothing was planned)"
        )
    return binary


def secret_variables(cfg: EnvironmentConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """``TF_VAR_*`` values for the connection keys given through the environment."""
    out: dict[str, str] = {}
    missing = []
    for index, connection in enumerate(cfg.connections):
        secret = connection.secret
        if connection.auth_type != "ApiKey" or not isinstance(secret, EnvSecret):
            continue
        if secret.env not in environ:
            missing.append(
                f"{config_path(cfg.environment).name}: connections[{index}].secret.env: "
                f"${secret.env} is not set; export {secret.env}=... (the key of connection "
                f"{connection.name!r})"
            )
            continue
        out[f"TF_VAR_{naming.tf_variable(secret.env)}"] = environ[secret.env]
    if missing:
        raise UserError("\n".join(missing))
    return out


def _run(binary: str, stack_dir: Path, args: list[str], env: Mapping[str, str], timeout: int) -> None:
    command = [binary, f"-chdir={stack_dir}", *args]
    try:
        proc = subprocess.run(command, env=dict(env), timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"terraform {args[0]} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        raise CheckFailed(f"terraform {args[0]} failed (exit {proc.returncode}) in {stack_dir}")


def plan(cfg: EnvironmentConfig, stack_dir: Path, binary: str) -> str:
    """``terraform init`` (the stack's azurerm backend) + ``plan -out``; returns the summary.

    In CI (or whenever ``GENAIOPS_PLAN_KEY`` is set) the saved plan is encrypted to
    ``plan.tfplan.enc`` and the plaintext deleted, so that the published artifact holds no secret.
    """
    key = plan_crypto.plan_key(os.environ, required=plan_crypto.running_in_ci(os.environ))
    env = {**os.environ, **secret_variables(cfg, os.environ), "TF_IN_AUTOMATION": "1"}
    for stale in (PLAN_FILE, ENCRYPTED_PLAN_FILE, SUMMARY_FILE):
        (stack_dir / stale).unlink(missing_ok=True)
    _run(binary, stack_dir, ["init", "-input=false", "-reconfigure"], env, INIT_TIMEOUT)
    _run(binary, stack_dir, ["plan", "-input=false", f"-out={PLAN_FILE}"], env, PLAN_TIMEOUT)
    proc = subprocess.run(
        [binary, f"-chdir={stack_dir}", "show", "-json", PLAN_FILE],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckFailed(f"terraform show failed on {stack_dir / PLAN_FILE}")
    summary = summarize(json.loads(proc.stdout))
    (stack_dir / SUMMARY_FILE).write_text(summary + "\n", encoding="utf-8")
    (stack_dir / ".artifactignore").write_text("\n".join(ARTIFACT_IGNORE) + "\n", encoding="utf-8")
    if not (stack_dir / LOCK_FILE).is_file():
        raise CheckFailed(
            f"terraform init wrote no {LOCK_FILE} in {stack_dir}: apply could not verify providers"
        )
    if key is not None:
        plan_crypto.encrypt_file(stack_dir / PLAN_FILE, stack_dir / ENCRYPTED_PLAN_FILE, key)
        (stack_dir / PLAN_FILE).unlink()
        summary += f"\nthe saved plan is encrypted ({ENCRYPTED_PLAN_FILE}, key ${plan_crypto.KEY_ENV})"
    return summary


def saved_plan(stack_dir: Path) -> Path | None:
    """The saved plan in ``stack_dir`` (encrypted or not), or None."""
    for name in (ENCRYPTED_PLAN_FILE, PLAN_FILE):
        if (stack_dir / name).is_file():
            return stack_dir / name
    return None


def apply(cfg: EnvironmentConfig, stack_dir: Path, binary: str) -> None:
    """Apply exactly the saved plan of ``genaiops plan`` (restored from the CI artifact), then delete it.

    Runs ``terraform init -input=false -lockfile=readonly`` first: a fresh CI job has no
    ``.terraform/`` (providers, backend), and the lock file from the plan stage must pin the
    providers init installs. An encrypted plan is decrypted with ``GENAIOPS_PLAN_KEY`` into a
    0600 file that is removed whatever happens.
    Errors: :class:`UserError` when the plan, the lock file or the key is missing;
    :class:`CheckFailed` when terraform fails.
    """
    saved = saved_plan(stack_dir)
    if saved is None:
        raise UserError(
            f"{stack_dir / PLAN_FILE} does not exist: run `make plan ENV={cfg.environment}` first "
            "(in CI: the apply stage downloads the plan stage's artifact into this folder)"
        )
    if not (stack_dir / LOCK_FILE).is_file():
        raise UserError(
            f"{stack_dir / LOCK_FILE} is missing: the plan artifact must carry the dependency lock "
            "file (GitHub upload-artifact needs include-hidden-files: true); run the plan again"
        )
    env = {**os.environ, **secret_variables(cfg, os.environ), "TF_IN_AUTOMATION": "1"}
    plain = stack_dir / PLAN_FILE
    try:
        if saved.name == ENCRYPTED_PLAN_FILE:
            key = plan_crypto.plan_key(os.environ, required=True)
            assert key is not None
            plan_crypto.decrypt_file(saved, plain, key)
        _run(binary, stack_dir, ["init", "-input=false", "-lockfile=readonly"], env, INIT_TIMEOUT)
        _run(binary, stack_dir, ["apply", "-input=false", PLAN_FILE], env, APPLY_TIMEOUT)
    finally:
        if saved.name == ENCRYPTED_PLAN_FILE:
            plain.unlink(missing_ok=True)
    saved.unlink(missing_ok=True)
    plain.unlink(missing_ok=True)


def summarize(plan_json: Mapping[str, Any]) -> str:
    """adds / changes / destroys per resource type, from ``terraform show -json``."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for change in plan_json.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        if actions == ["create"]:
            kind = "add"
        elif actions == ["update"]:
            kind = "change"
        elif actions == ["delete"]:
            kind = "destroy"
        elif sorted(actions) == ["create", "delete"]:
            kind = "replace"
        else:
            continue  # no-op / read
        counts[change.get("type", "?")][kind] += 1
    if not counts:
        return "plan: no changes"
    total: Counter[str] = Counter()
    lines = []
    width = max(len(t) for t in counts)
    for rtype in sorted(counts):
        c = counts[rtype]
        total.update(c)
        parts = [f"{c[k]} to {k}" for k in ("add", "change", "replace", "destroy") if c[k]]
        lines.append(f"  {rtype:<{width}}  {', '.join(parts)}")
    head = (
        f"plan: {total['add']} to add, {total['change']} to change, "
        f"{total['replace']} to replace, {total['destroy']} to destroy"
    )
    return "\n".join([head, *lines])
