"""The policy gate: checkov on a synthesized stack, with the policy of its network profile
(``infra/policy/<profile>.yaml``, read from the stack's ``network_profile`` output) and the
custom checks in ``infra/policy/checks/``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from release.errors import CheckFailed, UserError

POLICY_DIR = Path(__file__).resolve().parent / "policy"
PROFILES = ("public", "private")
CHECKS_DIR = POLICY_DIR / "checks"


def policy_file(profile: str) -> Path:
    """``infra/policy/public.yaml`` or ``infra/policy/private.yaml``."""
    if profile not in PROFILES:
        raise UserError(f"no checkov policy for network profile {profile!r}; expected one of {PROFILES}")
    return POLICY_DIR / f"{profile}.yaml"


def stack_profile(stack_dir: Path) -> str:
    """The network profile a synthesized stack was built for (its ``network_profile`` output)."""
    try:
        doc = json.loads((stack_dir / "cdk.tf.json").read_text())
        return str(doc["output"]["network_profile"]["value"])
    except (OSError, KeyError, json.JSONDecodeError):
        raise UserError(
            f"{stack_dir}/cdk.tf.json has no network_profile output; synthesize it again (`genaiops synth`)"
        ) from None


TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Finding:
    check_id: str
    name: str
    resource: str


@dataclass
class ScanResult:
    passed: int
    failed: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self, env: str) -> str:
        lines = [f"scan {env}: {self.passed} passed, {len(self.failed)} failed"]
        lines += [f"  FAILED {f.check_id} on {f.resource}: {f.name}" for f in self.failed]
        return "\n".join(lines)


def checkov_binary() -> str:
    local = Path(sys.executable).parent / "checkov"
    if local.is_file():
        return str(local)
    found = shutil.which("checkov")
    if not found:
        raise UserError("checkov is not installed; run `make install` (it is pinned in pyproject.toml)")
    return found


def run_checkov(stack_dir: Path) -> ScanResult:
    """Scan ``stack_dir`` (holding cdk.tf.json) offline with its profile's policy; returns the
    passed count and the failures."""
    if not (stack_dir / "cdk.tf.json").is_file():
        raise UserError(f"{stack_dir}/cdk.tf.json does not exist; run `genaiops synth` first")
    policy = policy_file(stack_profile(stack_dir))
    command = [
        checkov_binary(),
        "-d",
        str(stack_dir),
        "--config-file",
        str(policy),
        "--external-checks-dir",
        str(CHECKS_DIR),
        "--framework",
        "terraform_json",
        "--skip-download",
        "-o",
        "json",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"checkov did not finish within {TIMEOUT_SECONDS} s on {stack_dir}") from None
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise UserError(
            f"checkov failed on {stack_dir} (exit {proc.returncode}): {' | '.join(tail)}"
        ) from None
    reports = report if isinstance(report, list) else [report]
    result = ScanResult(passed=0)
    for item in reports:
        summary = item.get("summary", {})
        if summary.get("parsing_errors"):
            raise UserError(f"checkov could not parse {stack_dir}/cdk.tf.json; see `checkov -d {stack_dir}`")
        result.passed += int(summary.get("passed", 0))
        for check in item.get("results", {}).get("failed_checks", []):
            result.failed.append(
                Finding(check["check_id"], check.get("check_name", ""), check.get("resource", "?"))
            )
    if not result.passed and not result.failed:
        raise UserError(f"checkov found nothing to check in {stack_dir}; is it a synthesized stack?")
    return result


def gate(env: str, stack_dir: Path) -> ScanResult:
    """Run the scan and raise :class:`CheckFailed` naming every failed check."""
    result = run_checkov(stack_dir)
    if not result.ok:
        policy = policy_file(stack_profile(stack_dir))
        raise CheckFailed(result.summary(env) + f"\npolicy: {policy.relative_to(POLICY_DIR.parent.parent)}")
    return result
