"""Pipeline rehearsal (issue 11.6): every pipeline's steps run in order as on a hosted agent.

See rehearsal.py for what is real and what runs as a dry run. Per CI system the rehearsals run
in the order a release takes: pr, dev, prod (prod reads dev's artifacts), nightly.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent


def _module(name: str) -> ModuleType:
    qualified = f"genaiops_tests_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, _HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


# The rehearsal clones the repository: it needs a git checkout of all of it (tests/scaffold runs
# these pipeline tests in a partial, non-git copy, where only the static checks apply).
pytestmark = pytest.mark.skipif(
    not (_HERE.parents[1] / ".git").exists(), reason="needs a git checkout of the whole repository"
)

rh = _module("rehearsal")
hosted = _module("hosted_image")

PIPELINES = ("pr", "dev", "prod", "nightly")


@pytest.fixture(scope="module")
def machine() -> Iterator[Any]:
    root = Path(tempfile.mkdtemp(prefix="genaiops-rehearsal-"))
    root.chmod(0o755)  # the non-root user must reach its workspaces
    try:
        origin = rh.make_origin(root)
        box = rh.Machine.create(root, origin, hosted.tools())
        box.synthesize(["dev", "prod"])
        box.seed_state("dev")
        box.seed_state("prod")
        yield box
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _rehearse(machine: Any, pm: ModuleType, parse_cli: Any, system: str, compiled: Any) -> dict[str, Any]:
    runner = rh.Rehearsal(machine, pm, parse_cli)
    out: dict[str, Any] = {}
    for name in PIPELINES:
        try:
            if system == "azure":
                document = compiled[name].document
                jobs = rh.azure_jobs(document, document.get("pool"))
                branch = {"pr": "feature", "dev": "development", "prod": "main", "nightly": "development"}[
                    name
                ]
                out[name] = runner.run(
                    "azure",
                    name,
                    jobs,
                    branch=branch,
                    event="pr" if name == "pr" else "push",
                    run_id=f"azure-{name}",
                    resource_run="azure-dev",
                )
            else:
                workflow = compiled[name]
                jobs = rh.github_jobs(workflow, lambda uses: pm.load_workflow(pm.REPO / uses[2:]))
                event = {
                    "pr": "pull_request",
                    "dev": "push",
                    "prod": "workflow_dispatch",
                    "nightly": "schedule",
                }[name]
                branch = {"pr": "feature", "dev": "development", "prod": "main", "nightly": "development"}[
                    name
                ]
                out[name] = runner.run(
                    "github",
                    name,
                    jobs,
                    branch=branch,
                    event=event,
                    run_id=f"github-{name}",
                    inputs={"dev-run-id": "github-dev"} if name == "prod" else {},
                )
        except AssertionError as exc:
            out[name] = exc
    return out


@pytest.fixture(scope="module")
def azure_runs(
    machine: Any, pm: ModuleType, parse_cli: Any, azure_pipelines: dict[str, Any]
) -> dict[str, Any]:
    return _rehearse(machine, pm, parse_cli, "azure", azure_pipelines)


@pytest.fixture(scope="module")
def github_runs(
    machine: Any, pm: ModuleType, parse_cli: Any, github_workflows: dict[str, Any], azure_runs: dict[str, Any]
) -> dict[str, Any]:
    return _rehearse(machine, pm, parse_cli, "github", github_workflows)


def _ok(runs: dict[str, Any], name: str) -> Any:
    run = runs[name]
    if isinstance(run, BaseException):
        pytest.fail(f"rehearsal of {name} failed:\n{run}")
    return run


@pytest.mark.parametrize("system", ["azure", "github"])
@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_rehearsal_passes(
    system: str, name: str, azure_runs: dict[str, Any], github_runs: dict[str, Any]
) -> None:
    run = _ok(azure_runs if system == "azure" else github_runs, name)
    ran = [s for s in run.steps if s.status == "ok"]
    assert ran, "nothing ran"
    assert all(s.status != "failed" for s in run.steps)


@pytest.mark.parametrize("system", ["azure", "github"])
def test_pr_gates_only_the_flow_the_change_touched(
    system: str, azure_runs: dict[str, Any], github_runs: dict[str, Any], machine: Any
) -> None:
    run = _ok(azure_runs if system == "azure" else github_runs, "pr")
    touched = machine.origin.touched_flow
    experiments = [line for _, line in run.commands if " experiment " in f" {line} "]
    assert experiments and all(f"--flow {touched}" in line for line in experiments), experiments
    assert all(sha == machine.origin.feature for sha in run.checkouts.values())


@pytest.mark.parametrize("system", ["azure", "github"])
@pytest.mark.parametrize("name", ["dev", "prod"])
def test_apply_inits_then_applies_exactly_the_reviewed_plan_with_a_refreshable_token(
    system: str, name: str, azure_runs: dict[str, Any], github_runs: dict[str, Any], machine: Any
) -> None:
    run = _ok(azure_runs if system == "azure" else github_runs, name)
    plan_jobs = {job for job, line in run.commands if line.startswith("make plan")}
    apply_jobs = {job for job, line in run.commands if line.startswith("make apply")}
    assert len(plan_jobs) == 1 and len(apply_jobs) == 1
    homes = tuple(h + "/" for h in run.homes.values())
    calls = [
        c
        for c in machine.calls()
        if c["tool"] == "terraform" and c["cwd"].startswith(homes) and c["cwd"].endswith(f"/stacks/{name}")
    ]
    plan_dir = {c["cwd"] for c in calls if c.get("event") == "plan"}
    events_by_dir: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        events_by_dir.setdefault(call["cwd"], []).append(call)
    planned = [c for c in calls if c.get("event") == "plan" and c["cwd"] in plan_dir]
    applied = [c for c in calls if c.get("event") == "apply"]
    reviewed = {c["sha256"] for c in planned}
    mine = [a for a in applied if a["plan_sha256"] in reviewed]
    assert len(mine) == 1, "apply applied a plan other than the one the plan job wrote"
    apply_dir = events_by_dir[mine[0]["cwd"]]
    kinds = [c.get("event") for c in apply_dir if c.get("event") in ("init", "apply")]
    assert kinds[-2:] == ["init", "apply"], kinds
    init = [c for c in apply_dir if c.get("event") == "init"][-1]
    assert "-lockfile=readonly" in init["argv"]
    expected = "azure-devops-refreshable" if system == "azure" else "github-refreshable"
    assert {c["auth"] for c in apply_dir + planned if "auth" in c} == {expected}
    assert not [c for c in calls if "error" in c], [c["error"] for c in calls if "error" in c]


@pytest.mark.parametrize("system", ["azure", "github"])
@pytest.mark.parametrize("name", ["dev", "prod"])
def test_plan_artifact_holds_what_apply_reads_and_no_secret(
    system: str, name: str, azure_runs: dict[str, Any], github_runs: dict[str, Any]
) -> None:
    run = _ok(azure_runs if system == "azure" else github_runs, name)
    artifact = run.published[f"plan-{name}"]
    files = {p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file()}
    assert {"cdk.tf.json", ".terraform.lock.hcl", "plan.tfplan.enc", "plan-summary.txt"} <= files, files
    assert "plan.tfplan" not in files and not any(f.startswith(".terraform/") for f in files), files
    for path in artifact.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for canary in (rh.STATE_SECRET, rh.AOAI_KEY, rh.PLAN_KEY):
                assert canary.encode() not in data, f"{path.name} holds a secret"


@pytest.mark.parametrize("system", ["azure", "github"])
def test_prod_promotes_the_commit_dev_gated_after_an_explicit_approval(
    system: str, azure_runs: dict[str, Any], github_runs: dict[str, Any], machine: Any
) -> None:
    runs = azure_runs if system == "azure" else github_runs
    dev, prod = _ok(runs, "dev"), _ok(runs, "prod")
    gated = {sha for job, sha in dev.checkouts.items() if "gate" in job}
    assert gated == {machine.origin.base}
    promotes = [line for _, line in prod.commands if " promote " in f" {line} "]
    assert promotes, "prod promotes nothing"
    for line in promotes:
        words = line.split()
        assert words[words.index("--commit") + 1] == machine.origin.base, line
        assert words[words.index("--from") + 1] == "dev" and words[words.index("--to") + 1] == "prod"
    assert not [
        line for _, line in prod.commands if line.startswith(("make build", ".venv/bin/genaiops push"))
    ]
    order = [s.job for s in prod.steps if s.status == "ok"]
    if system == "azure":
        (approval,) = prod.approvals
        assert approval["onTimeout"] == "reject" and approval["timeout"]
        assert "buildId=4711" in approval["instructions"] and machine.origin.base in approval["instructions"]
        first_deploy = next(i for i, j in enumerate(order) if j.startswith("deploy."))
        assert any(j.startswith("approve.") for j in order[:first_deploy])
    else:
        first_deploy = next(i for i, j in enumerate(order) if j.endswith("/deploy"))
        assert any(j == "approve" for j in order[:first_deploy])


@pytest.mark.parametrize("system", ["azure", "github"])
def test_every_job_runs_as_non_root_on_a_fresh_clone(
    system: str, azure_runs: dict[str, Any], github_runs: dict[str, Any]
) -> None:
    runs = azure_runs if system == "azure" else github_runs
    for name in PIPELINES:
        run = _ok(runs, name)
        installs = [job for job, line in run.commands if line == "make install"]
        for job, line in run.commands:
            if line.startswith(".venv/bin/"):
                assert job in installs, f"{job}: {line} without `make install` in the same job"


def test_dry_runs_are_listed(azure_runs: dict[str, Any], github_runs: dict[str, Any]) -> None:
    """The rehearsal says which commands it did not really run (printed with -rA / on failure)."""
    listed = []
    for runs in (azure_runs, github_runs):
        for name in PIPELINES:
            listed += _ok(runs, name).dry_runs
    assert any("experiment" in d for d in listed) and any("make test" in d for d in listed)
    print("\n".join(["dry-run commands:", *sorted({d.split(": ", 1)[1] for d in listed})]))


# --------------------------------------------------------------------------- the rehearsal can fail


def test_a_tool_that_is_not_on_the_image_fails_the_step(machine: Any, pm: ModuleType, parse_cli: Any) -> None:
    document = {
        "stages": [
            {
                "stage": "s",
                "jobs": [
                    {
                        "job": "j",
                        "pool": {"vmImage": "ubuntu-24.04"},
                        "steps": [{"checkout": "self"}, {"script": "terraform version"}],
                    }
                ],
            }
        ]
    }
    runner = rh.Rehearsal(machine, pm, parse_cli)
    with pytest.raises(rh.RehearsalError, match=r"neither on the documented ubuntu-24\.04 image"):
        runner.run(
            "azure", "t", rh.azure_jobs(document, None), branch="development", event="push", run_id="neg-1"
        )


def test_hidden_lock_file_is_lost_without_include_hidden_files(
    machine: Any, pm: ModuleType, parse_cli: Any
) -> None:
    runner = rh.Rehearsal(machine, pm, parse_cli)
    home = Path(tempfile.mkdtemp(dir=machine.root))
    stack = home / "s" / "stack"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text("{}")
    (stack / ".terraform.lock.hcl").write_text("lock")
    (stack / ".terraform").mkdir()
    (stack / ".terraform" / "provider").write_text("binary")
    store = machine.artifacts / "neg-2"
    store.mkdir()
    run = rh.Run("github", "t", "neg-2")
    state = {"workspace": home / "s", "store": store}
    runner._upload(run, state, {"name": "a", "path": "stack", "include-hidden-files": "false"})
    assert {p.name for p in (store / "a").rglob("*")} == {"cdk.tf.json"}
    runner._upload(
        run, state, {"name": "b", "path": "stack\n!stack/.terraform", "include-hidden-files": "true"}
    )
    assert {p.name for p in (store / "b").rglob("*")} == {"cdk.tf.json", ".terraform.lock.hcl"}


def test_github_expressions(pm: ModuleType) -> None:
    ctx = {
        "steps": {"changed": {"outputs": {"touched": "true"}}},
        "inputs": {"dataset": "", "register": True},
    }
    status = {"failed": False}
    assert rh.gh_evaluate("steps.changed.outputs.touched == 'true' && inputs.dataset == ''", ctx, status)
    assert not rh.gh_evaluate("steps.changed.outputs.touched == 'true' && inputs.dataset != ''", ctx, status)
    assert rh.gh_evaluate("always() && inputs.register", ctx, status)
    assert not rh.gh_evaluate("failure()", ctx, status)
    assert rh.gh_evaluate("failure()", ctx, {"failed": True})


def test_the_hosted_image_table_has_no_terraform() -> None:
    tools = hosted.tools()
    assert not set(hosted.NOT_ON_IMAGE) & tools
    assert {"make", "git", "bash", "az", "docker", "sudo", "python3"} <= tools
    assert hosted.SOURCE.startswith("https://github.com/actions/runner-images/")
    json.dumps(hosted.DOCUMENTED)  # a plain table
