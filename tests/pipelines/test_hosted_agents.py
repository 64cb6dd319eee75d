"""What a real run on hosted agents needs, checked on the compiled pipelines (issue 11.1).

pipelines.md section 3: Terraform installed at the pinned version before plan/apply (1), the
plan artifact apply needs (2), explicit pool/runs-on (10), job timeouts above the apply
timeout (11), concurrency locks and a human approval before prod traffic moves (9), the
refreshable federated token (8), the dev.yml permissions (4), the run-number format (12).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from infra import terraform
from release.config import load_config

_VERSION_MACRO = "$(TERRAFORM_VERSION)"


def _azure_jobs(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{stage['stage']}.{job.get('job') or job.get('deployment')}", job)
        for stage in document["stages"]
        for job in stage["jobs"]
    ]


def _job_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    if "deployment" in job:
        return list(job["strategy"]["runOnce"]["deploy"]["steps"])
    return list(job.get("steps", []))


def _scripts(pm: ModuleType, steps: list[dict[str, Any]]) -> list[str]:
    return [s for step in steps for s in pm.step_scripts(step)]


def test_terraform_version_is_pinned_in_one_place() -> None:
    pinned = terraform.pinned_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)
    assert tuple(int(x) for x in pinned.split(".")[:2]) >= terraform.MIN_VERSION
    repo = terraform.VERSION_FILE.parent
    for folder in (repo / ".azure-pipelines", repo / ".github" / "workflows"):
        for path in folder.rglob("*.yml"):
            text = path.read_text()
            assert pinned not in text, (
                f"{path}: the Terraform version is written here too (use .terraform-version)"
            )


@pytest.mark.parametrize("name", ["dev", "prod", "nightly"])
def test_azure_jobs_install_the_pinned_terraform_before_using_it(
    pm: ModuleType, azure_pipelines: dict[str, Any], name: str
) -> None:
    seen = 0
    for key, job in _azure_jobs(azure_pipelines[name].document):
        steps = _job_steps(job)
        for index, step in enumerate(steps):
            kinds = pm.kinds(pm.step_scripts(step))
            if kinds & {("make", "plan"), ("make", "apply"), ("make", "integration")}:
                seen += 1
                installers = [s for s in steps[:index] if s.get("task") == "TerraformInstaller@1"]
                assert installers, f"{name}: {key}: terraform is used before any TerraformInstaller@1"
                assert installers[-1]["inputs"]["terraformVersion"] == _VERSION_MACRO
                reader = steps[steps.index(installers[-1]) - 1]
                assert (
                    "cat .terraform-version" in reader["script"] and "TERRAFORM_VERSION" in reader["script"]
                )
    assert seen >= (1 if name == "nightly" else 2)


@pytest.mark.parametrize("name", ["dev", "prod", "nightly"])
def test_github_jobs_install_the_pinned_terraform_before_using_it(
    pm: ModuleType, github_workflows: dict[str, Any], name: str
) -> None:
    seen = 0
    for workflow in [github_workflows[name], github_workflows["_infra"]]:
        for key, job in (workflow.get("jobs") or {}).items():
            steps = job.get("steps") or []
            for index, step in enumerate(steps):
                kinds = pm.kinds(pm.step_scripts(step))
                if kinds & {("make", "plan"), ("make", "apply"), ("make", "integration")}:
                    seen += 1
                    setup = [
                        s
                        for s in steps[:index]
                        if str(s.get("uses", "")).startswith("hashicorp/setup-terraform@")
                    ]
                    assert setup, f"{key}: terraform is used before hashicorp/setup-terraform"
                    assert setup[-1]["uses"].endswith("dfe3c3f87815947d99a8997f908cb6525fc44e9e")
                    assert setup[-1]["with"] == {
                        "terraform_version": "${{ steps.terraform-version.outputs.version }}",
                        "terraform_wrapper": False,
                    }
                    reader = next(s for s in steps if s.get("id") == "terraform-version")
                    assert "cat .terraform-version" in reader["run"] and "$GITHUB_OUTPUT" in reader["run"]
    assert seen >= 1


@pytest.mark.parametrize("name", ["pr", "dev", "prod", "nightly"])
def test_every_azure_job_names_its_pool_and_a_timeout(
    pm: ModuleType, azure_pipelines: dict[str, Any], name: str
) -> None:
    document = azure_pipelines[name].document
    assert document["pool"] == {"vmImage": "ubuntu-24.04"}
    apply_floor = (terraform.APPLY_TIMEOUT + terraform.INIT_TIMEOUT) / 60
    plan_floor = (terraform.PLAN_TIMEOUT + terraform.INIT_TIMEOUT) / 60
    private_pool = load_config("prod", example=True).network.agent_pool.name  # type: ignore[union-attr]
    for key, job in _azure_jobs(document):
        pool = job.get("pool", document["pool"])
        if name == "prod" and str(job.get("deployment", "")).startswith("deploy_"):
            # prod is network: private: only agents inside its VNet reach the private endpoints
            assert pool == {"name": private_pool}, (name, key, pool)
            continue
        assert pool in ({"vmImage": "ubuntu-24.04"}, "server"), (name, key, pool)
        timeout = job.get("timeoutInMinutes")
        assert isinstance(timeout, int) and timeout > 0, f"{name}: {key} has no timeoutInMinutes"
        kinds = pm.kinds(_scripts(pm, _job_steps(job)))
        if ("make", "apply") in kinds:
            assert timeout > apply_floor, f"{name}: {key}: {timeout} min is below apply's own timeout"
        if ("make", "plan") in kinds:
            assert timeout > plan_floor, f"{name}: {key}: {timeout} min is below plan's own timeout"


@pytest.mark.parametrize("name", ["pr", "dev", "prod", "nightly", "_infra", "_flow-gate", "_flow-release"])
def test_every_github_job_runs_on_ubuntu_24_04_with_a_timeout(
    pm: ModuleType, github_workflows: dict[str, Any], name: str
) -> None:
    apply_floor = (terraform.APPLY_TIMEOUT + terraform.INIT_TIMEOUT) / 60
    for key, job in github_workflows[name]["jobs"].items():
        if "uses" in job:
            continue  # runs-on and timeout-minutes live in the called workflow's jobs
        assert job["runs-on"] == "ubuntu-24.04", (name, key)
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and timeout > 0, f"{name}: {key} has no timeout-minutes"
        if ("make", "apply") in pm.kinds(_scripts(pm, job.get("steps") or [])):
            assert timeout > apply_floor


def test_release_pipelines_cannot_overlap(
    azure_pipelines: dict[str, Any], github_workflows: dict[str, Any]
) -> None:
    for name in ("dev", "prod", "nightly"):
        assert azure_pipelines[name].document["lockBehavior"] == "sequential", name
    groups = {}
    for name in ("dev", "prod", "nightly"):
        concurrency = github_workflows[name]["concurrency"]
        assert concurrency["cancel-in-progress"] is False, name
        groups[name] = concurrency["group"]
    assert groups["prod"] == "release-prod" and groups["dev"] == groups["nightly"] == "release-dev"


def test_azure_prod_waits_for_an_explicit_approval_before_traffic_moves(
    pm: ModuleType, azure_pipelines: dict[str, Any]
) -> None:
    document = azure_pipelines["prod"].document
    stages = {s["stage"]: s for s in document["stages"]}
    (job,) = stages["approve"]["jobs"]
    assert job["pool"] == "server" and 0 < job["timeoutInMinutes"] <= 43200
    (step,) = job["steps"]
    assert step["task"] == "ManualValidation@1"
    inputs = step["inputs"]
    assert inputs["onTimeout"] == "reject" and inputs["notifyUsers"] and inputs["approvers"]
    assert "_build/results?buildId=$(Build.BuildId)" in inputs["instructions"]
    assert "$(Build.SourceVersion)" in inputs["instructions"]
    deps = pm.stage_dependencies(document)
    assert "approve" in pm.transitive(deps, "deploy")
    assert {"gate", "promote"} <= pm.transitive(deps, "approve")
    assert not pm.kinds(pm.step_scripts(stages["approve"]))


def test_github_prod_waits_for_the_approval_environment(github_workflows: dict[str, Any]) -> None:
    jobs = github_workflows["prod"]["jobs"]
    assert jobs["approve"]["environment"] == "genaiops-prod-approval"
    assert jobs["approve"]["needs"] == "gate"
    assert jobs["release"]["needs"] == "approve"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "github-actions.md").read_text()
    assert "genaiops-prod-approval" in docs and "required reviewers" in docs.lower()


def test_dev_workflow_grants_what_its_reusable_workflows_ask(
    pm: ModuleType, github_workflows: dict[str, Any]
) -> None:
    for name in ("pr", "dev", "prod", "nightly"):
        assert pm.permission_violations(pm.GITHUB_DIR / f"{name}.yml", github_workflows[name]) == [], name


def test_permission_check_catches_the_startup_failure(
    pm: ModuleType, github_workflows: dict[str, Any]
) -> None:
    broken = dict(github_workflows["dev"])
    broken["permissions"] = {"contents": "read", "id-token": "write"}  # the file as reviewed
    problems = pm.permission_violations(pm.GITHUB_DIR / "dev.yml", broken)
    assert any(
        "nested job 'image' is requesting 'actions: read', but is only allowed 'actions: none'" in p
        for p in problems
    )


def test_plan_artifacts_carry_the_lock_file_and_no_provider_binaries_or_plaintext_plan(
    azure_pipelines: dict[str, Any], github_workflows: dict[str, Any]
) -> None:
    upload = next(
        s
        for s in github_workflows["_infra"]["jobs"]["plan"]["steps"]
        if "upload-artifact" in str(s.get("uses"))
    )
    assert upload["with"]["include-hidden-files"] is True
    lines = [line.strip() for line in upload["with"]["path"].splitlines()]
    assert "!cdktf.out/stacks/${{ inputs.env }}/.terraform" in lines
    assert "!cdktf.out/stacks/${{ inputs.env }}/plan.tfplan" in lines
    assert terraform.ARTIFACT_IGNORE == (".terraform/", "plan.tfplan")
    for job in github_workflows["_infra"]["jobs"].values():
        assert job["env"]["GENAIOPS_PLAN_KEY"] == "${{ secrets.GENAIOPS_PLAN_KEY }}"
    for name in ("dev", "prod"):
        stages = {s["stage"]: s for s in azure_pipelines[name].document["stages"]}
        for stage in ("plan", "apply"):
            cli = [
                s
                for job in stages[stage]["jobs"]
                for s in _job_steps(job)
                if str(s.get("task", "")).startswith("AzureCLI@")
            ]
            assert cli and all(s["env"].get("GENAIOPS_PLAN_KEY") == "$(GENAIOPS_PLAN_KEY)" for s in cli), (
                name,
                stage,
            )


def test_run_numbers_use_only_tokens_azure_devops_expands(azure_pipelines: dict[str, Any]) -> None:
    allowed = {"Date:yyyyMMdd", "Rev:.r", "Rev:r", "Build.DefinitionName", "SourceBranchName"}
    for name, expansion in azure_pipelines.items():
        tokens = set(re.findall(r"\$\(([^)]+)\)", expansion.document["name"]))
        assert tokens <= allowed, f"{name}: run number uses {tokens - allowed} (not expanded there)"


def test_image_record_artifacts_are_the_folder_the_cli_writes_and_reads(
    pm: ModuleType, azure_pipelines: dict[str, Any], github_workflows: dict[str, Any]
) -> None:
    """build/push write, promote/deploy read `release.image.records_dir(env)`: the artifacts carry
    exactly that folder (the rehearsal runs those commands dry, so this is checked here)."""
    import os

    from release.config import REPO_ROOT
    from release.image import records_dir

    saved = os.environ.pop("GENAIOPS_IMAGES_DIR", None)
    try:
        expected = {env: records_dir(env).relative_to(REPO_ROOT).as_posix() for env in ("dev", "prod")}
    finally:
        if saved is not None:
            os.environ["GENAIOPS_IMAGES_DIR"] = saved
    seen = 0
    for name in ("dev", "prod"):
        for step in pm.steps_of(azure_pipelines[name].document):
            inputs = step.get("inputs") or {}
            artifact = inputs.get("artifact") or inputs.get("artifactName") or ""
            if artifact.startswith("images-"):
                env = artifact.split("-")[1]
                assert (inputs.get("targetPath")) == expected[env], (name, step)
                seen += 1
    release = github_workflows["_flow-release"]
    for job in release["jobs"].values():
        for step in job["steps"]:
            if "artifact@" in str(step.get("uses")) and str(step["with"]["name"]).startswith("images-"):
                assert step["with"]["path"] in (
                    ".genaiops/images/${{ inputs.env }}",
                    f"{expected['dev']}",
                ), step
                seen += 1
    assert expected == {"dev": ".genaiops/images/dev", "prod": ".genaiops/images/prod"}
    assert seen >= 8
