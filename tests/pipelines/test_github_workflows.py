"""GitHub Actions workflows: they parse, call what exists, sign in with OIDC, gate before deploying."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import yaml

from release.config import load_config

_PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def test_every_workflow_parses_with_jobs(github_workflows: dict[str, dict[str, Any]]) -> None:
    assert {"pr", "dev", "prod"} <= set(github_workflows)
    for name, workflow in github_workflows.items():
        assert workflow.get("on"), name
        assert workflow.get("jobs"), name


def test_needs_name_existing_jobs_and_reusable_calls_match_inputs(
    pm: ModuleType, github_workflows: dict[str, dict[str, Any]]
) -> None:
    for name, workflow in github_workflows.items():
        deps = pm.job_needs(workflow)
        for job, needs in deps.items():
            assert needs <= set(deps), f"{name}: {job} needs an unknown job"
            assert job not in pm.transitive(deps, job), f"{name}: {job} needs itself"
        for job_name, job in workflow["jobs"].items():
            pm.check_reusable_call(job_name, job, pm.GITHUB_DIR / f"{name}.yml")


def test_reusable_call_check_can_fail(pm: ModuleType) -> None:
    caller = pm.GITHUB_DIR / "pr.yml"
    job = {
        "uses": "./.github/workflows/_flow-gate.yml",
        "with": {"flow": "x", "paths": "p", "env": "dev", "colour": "red"},
    }
    try:
        pm.check_reusable_call("gate", job, caller)
    except pm.TemplateError as exc:
        assert "colour" in str(exc)
    else:
        raise AssertionError("an undeclared input was accepted")
    job["with"] = {"flow": "x"}
    try:
        pm.check_reusable_call("gate", job, caller)
    except pm.TemplateError as exc:
        assert "required" in str(exc)
    else:
        raise AssertionError("a missing required input was accepted")


def test_jobs_that_deploy_need_the_job_that_gates(
    pm: ModuleType, github_workflows: dict[str, dict[str, Any]]
) -> None:
    for name in ("dev", "prod"):
        workflow = github_workflows[name]
        units = pm.github_units(workflow)
        assert any(pm.kinds(s) & pm.DEPLOYS for s in units.values()), name
        assert pm.ungated(units, pm.job_needs(workflow)) == [], name
    pr_kinds = set().union(*(pm.kinds(s) for s in pm.github_units(github_workflows["pr"]).values()))
    assert ("genaiops", "gate") in pr_kinds and not pr_kinds & (pm.DEPLOYS | pm.PROMOTES)
    prod_kinds = set().union(*(pm.kinds(s) for s in pm.github_units(github_workflows["prod"]).values()))
    assert ("genaiops", "promote") in prod_kinds and ("make", "rollback") in prod_kinds


def test_azure_login_is_oidc_and_actions_are_pinned(github_workflows: dict[str, dict[str, Any]]) -> None:
    logins = 0
    for name, workflow in github_workflows.items():
        assert workflow["permissions"]["id-token"] == "write", name
        assert "client-secret" not in yaml.safe_dump(workflow) and "creds:" not in yaml.safe_dump(workflow)
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses:
                    assert _PINNED.match(uses), f"{name}: {uses} is not pinned to a commit"
                if uses and uses.startswith("azure/login@"):
                    logins += 1
                    assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}
                if "setup-python" in (uses or ""):
                    assert step["with"]["cache"] == "pip", "pip caching"
                assert "set -x" not in str(step.get("run", ""))
    assert logins >= 3


def test_workflow_flow_matrices_match_the_config(github_workflows: dict[str, dict[str, Any]]) -> None:
    flows = load_config("local").flows
    for name in ("pr", "dev", "prod"):
        for job_name, job in github_workflows[name]["jobs"].items():
            include = ((job.get("strategy") or {}).get("matrix") or {}).get("include")
            if include and "flow" in include[0]:
                assert {i["flow"] for i in include} == set(flows), (name, job_name)
                for item in include:
                    if "paths" in item:
                        assert flows[item["flow"]].path in item["paths"].split(","), (name, item)
