"""Apply, check, destroy against a real subscription, the way Azure/terraform-cdk-constructs tests
its constructs: one uniquely named resource group per run, tagged with the run id and a maximum
age (``genaiops cleanup`` removes it if this run dies before its finalizer), then

    plan + apply the dev stack into it -> doctor -> release web_classification (smallest SKU)
    -> smoke -> a second deployment -> rollback -> terraform destroy + delete the group.

Run it with ``make integration ENV=dev``; the nightly pipelines do. It reads the dev config, so
everything the dev environment needs (``${VAR}`` values) must be set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from release.config import CONFIG_DIR

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLOW = "web_classification"
SMALLEST_MANAGED_SKU = "Standard_DS1_v2"  # smallest size Azure ML managed online endpoints accept
MAX_AGE = timedelta(hours=6)
STEP_TIMEOUT_S = 3600  # one apply / release step; every step is bounded


def run_id() -> str:
    """The pipeline's build id when there is one (traceable), else a random one."""
    raw = (
        os.environ.get("GENAIOPS_RUN_ID")
        or os.environ.get("BUILD_BUILDID")
        or os.environ.get("GITHUB_RUN_ID")
    )
    return (raw or uuid.uuid4().hex[:8]).lower()[:20]


def overlay(env: str, group: str, run: str) -> dict[str, Any]:
    """config/<env>.yaml, pointed at the run's own group and state key, one flow, smallest SKU."""
    raw = yaml.safe_load((CONFIG_DIR / f"{env}.yaml").read_text())
    raw["azure"]["resource_group"] = {"name": group, "create": False}
    raw["azure"]["tags"] = {**raw["azure"].get("tags", {}), "genaiops-run-id": run}
    raw["state"]["key"] = f"integration-{run}.tfstate"  # never the environment's real state
    flow = raw["flows"][FLOW]
    raw["flows"] = {FLOW: flow}
    flow["deployment"].update(target="managed", instance_type=SMALLEST_MANAGED_SKU, instance_count=1)
    return raw


def genaiops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "release", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    print(f"$ genaiops {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def run_group(azure_ready: None, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    from release.azure import testgroups
    from release.azure.clients import AzureContext
    from release.config import load_config_file

    env_name = os.environ.get("GENAIOPS_ENV", "dev")
    run = run_id()
    base = load_config_file(CONFIG_DIR / f"{env_name}.yaml")
    assert base.azure is not None
    group = testgroups.group_name(base.azure.name_prefix, run)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / f"{env_name}.yaml").write_text(yaml.safe_dump(overlay(env_name, group, run)))
    environ = {**os.environ, "GENAIOPS_CONFIG_DIR": str(config_dir)}
    cfg = load_config_file(config_dir / f"{env_name}.yaml")
    ctx = AzureContext.from_config(cfg)
    testgroups.create(ctx, group, run, MAX_AGE, tags=dict(base.azure.tags))
    try:
        yield env_name, environ
    finally:
        stack = REPO / "cdktf.out" / "stacks" / env_name
        if stack.is_dir():  # destroy what terraform made, then the group (catches anything else)
            subprocess.run(
                ["terraform", f"-chdir={stack}", "destroy", "-auto-approve", "-input=false"],
                env=environ,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
        testgroups.delete(ctx, group)


def test_apply_doctor_release_smoke_rollback_destroy(run_group: tuple[str, dict[str, str]]) -> None:
    env, environ = run_group
    assert genaiops("plan", "--env", env, env=environ).returncode == 0
    assert genaiops("apply", "--env", env, env=environ).returncode == 0
    doctor = genaiops("doctor", "--env", env, env=environ)
    assert doctor.returncode == 0, doctor.stdout

    assert genaiops("release", "--flow", FLOW, "--env", env, env=environ).returncode == 0
    assert genaiops("smoke", "--flow", FLOW, "--env", env, env=environ).returncode == 0
    first = _serving(env, environ)

    assert genaiops("deploy", "--flow", FLOW, "--env", env, env=environ).returncode == 0
    assert _serving(env, environ) != first
    assert genaiops("rollback", "--flow", FLOW, "--env", env, env=environ).returncode == 0
    assert _serving(env, environ) == first
    assert genaiops("smoke", "--flow", FLOW, "--env", env, env=environ).returncode == 0


def _serving(env: str, environ: dict[str, str]) -> str:
    """The deployment that takes 100 % of the flow's traffic (``genaiops status --json``)."""
    status = genaiops("status", "--flow", FLOW, "--env", env, "--json", env=environ)
    assert status.returncode == 0
    [flow] = json.loads(status.stdout)
    serving = [d["name"] for d in flow["deployments"] if d["traffic"] == 100]
    assert len(serving) == 1, flow["deployments"]
    return str(serving[0])
