"""``terraform init/plan/apply`` on a synthesized stack, and the human plan summary.

Runs only where a terraform binary (>= 1.11) and Azure credentials exist; otherwise
:func:`preflight` raises a :class:`UserError` that says what is missing.
Connection keys are passed as ``TF_VAR_secret_<var>`` in the child's environment only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra import naming
from release.config import EnvironmentConfig, EnvSecret, config_path
from release.errors import CheckFailed, UserError

MIN_VERSION = (1, 11)
PLAN_FILE = "plan.tfplan"
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
    version = terraform_version(binary)
    if version < MIN_VERSION:
        raise UserError(
            f"synth and scan passed, but terraform {version[0]}.{version[1]} is too old: "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is needed (ephemeral variables)"
        )
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
    """``terraform init`` (the stack's azurerm backend) + ``plan -out``; returns the summary."""
    env = {**os.environ, **secret_variables(cfg, os.environ), "TF_IN_AUTOMATION": "1"}
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
    return summarize(json.loads(proc.stdout))


def apply(cfg: EnvironmentConfig, stack_dir: Path, binary: str) -> None:
    """Apply exactly the saved plan of ``genaiops plan``, then delete it."""
    saved = stack_dir / PLAN_FILE
    if not saved.is_file():
        raise UserError(f"{saved} does not exist: run `make plan ENV={cfg.environment}` first")
    env = {**os.environ, **secret_variables(cfg, os.environ), "TF_IN_AUTOMATION": "1"}
    _run(binary, stack_dir, ["apply", "-input=false", PLAN_FILE], env, APPLY_TIMEOUT)
    saved.unlink()


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
