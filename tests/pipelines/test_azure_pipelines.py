"""Azure DevOps pipelines: they compile, call only what exists, and release in a safe order."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from release.config import load_config
from release.experiment.spec import load_experiment


def _stages(expansion: Any) -> list[dict[str, Any]]:
    return list(expansion.document["stages"])


def test_every_azure_file_parses(pm: ModuleType) -> None:
    files = sorted(pm.AZURE_DIR.rglob("*.yml"))
    assert len(files) >= 10
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_pipelines_compile_and_use_every_template(pm: ModuleType, azure_pipelines: dict[str, Any]) -> None:
    used = set().union(*(e.templates for e in azure_pipelines.values()))
    templates = {p.resolve() for p in (pm.AZURE_DIR / "templates").rglob("*.yml")}
    assert templates - used == set(), "templates no pipeline uses"
    for name, expansion in azure_pipelines.items():
        assert pm.stage_names(expansion.document), name
        assert "${{" not in yaml.safe_dump(expansion.document), f"{name}: an expression was left unexpanded"


@pytest.mark.parametrize(
    ("pipeline", "template", "error"),
    [
        ("- template: t/missing.yml", None, "does not exist"),
        ("- template: t/s.yml\n  parameters: {env: dev, bogus: 1}", None, "does not declare: ['bogus']"),
        ("- template: t/s.yml\n  parameters: {}", None, "required parameter 'env'"),
        ("- template: t/s.yml\n  parameters: {env: dev, flag: maybe}", None, "must be a boolean"),
        ("- template: t/s.yml\n  parameters: {env: dev}", "${{ parameters.nope }}", "has no 'nope'"),
    ],
)
def test_compiler_rejects_bad_template_use(
    pm: ModuleType, tmp_path: Path, pipeline: str, template: str | None, error: str
) -> None:
    (tmp_path / "t").mkdir()
    body = template or "echo ${{ parameters.env }}"
    (tmp_path / "t" / "s.yml").write_text(
        "parameters:\n- name: env\n  type: string\n- name: flag\n  type: boolean\n  default: false\n"
        f"steps:\n- script: {body}\n"
    )
    (tmp_path / "p.yml").write_text(f"steps:\n{pipeline}\n")
    with pytest.raises(pm.TemplateError, match=error.replace("[", r"\[").replace("]", r"\]")):
        pm.AzureExpander().expand_pipeline(tmp_path / "p.yml")


def test_triggers(pm: ModuleType, azure_pipelines: dict[str, Any]) -> None:
    pr, dev, prod, nightly = (azure_pipelines[n].document for n in ("pr", "dev", "prod", "nightly"))
    assert pr["trigger"] == "none" and pr["pr"]["branches"]["include"] == ["development"]
    assert dev["pr"] == "none" and dev["trigger"]["branches"]["include"] == ["development"]
    assert prod["pr"] == "none" and set(prod["trigger"]["branches"]["include"]) == {"main", "release/*"}
    assert nightly["trigger"] == "none" and nightly["pr"] == "none"
    (schedule,) = nightly["schedules"]
    assert schedule["branches"]["include"] == ["development"] and schedule["always"] is True
    assert ("make", "integration") in pm.kinds(pm.step_scripts(nightly))


def test_stages_that_deploy_depend_on_the_stage_that_gates(
    pm: ModuleType, azure_pipelines: dict[str, Any]
) -> None:
    for name in ("dev", "prod"):
        document = azure_pipelines[name].document
        deps = pm.stage_dependencies(document)
        assert set().union(*deps.values()) <= set(deps), f"{name}: dependsOn names an unknown stage"
        assert pm.ungated(pm.azure_units(document), deps) == [], name
        kinds = {stage: pm.kinds(scripts) for stage, scripts in pm.azure_units(document).items()}
        assert any(k & pm.DEPLOYS for k in kinds.values()), f"{name} deploys nothing"
        apply = [s for s, k in kinds.items() if ("make", "apply") in k]
        plan = [s for s, k in kinds.items() if ("make", "plan") in k]
        assert apply and plan and all(plan[0] in pm.transitive(deps, s) for s in apply), name
    # the gate really is in the way: a deploy stage without the dependency is reported
    broken = {
        "stages": [
            {
                "stage": "gate",
                "dependsOn": [],
                "jobs": [{"job": "g", "steps": [{"script": "make evaluate FLOW=x"}]}],
            },
            {
                "stage": "deploy",
                "dependsOn": [],
                "jobs": [{"job": "d", "steps": [{"script": ".venv/bin/genaiops deploy --flow x"}]}],
            },
        ]
    }
    assert pm.ungated(pm.azure_units(broken), pm.stage_dependencies(broken)) == ["deploy"]


def test_pr_pipeline_gates_and_publishes_reports(pm: ModuleType, azure_pipelines: dict[str, Any]) -> None:
    document = azure_pipelines["pr"].document
    kinds = set().union(*(pm.kinds(s) for s in pm.azure_units(document).values()))
    assert {
        ("make", "lint"),
        ("make", "test"),
        ("make", "synth"),
        ("make", "scan"),
        ("genaiops", "gate"),
    } <= kinds
    assert not kinds & (pm.DEPLOYS | pm.PROMOTES | {("make", "apply")}), "a PR must not change anything"
    scans = [c for s in pm.step_scripts(document) for c in pm.commands(s) if c.args[:1] == ("scan",)]
    assert {a for c in scans for a in c.args if a.startswith("ENV=")} == {"ENV=dev", "ENV=prod"}
    gate = next(s for s in document["stages"] if s["stage"] == "gate")
    for job in gate["jobs"]:
        steps = job["steps"]
        tasks = [s.get("task") for s in steps]
        assert "PublishPipelineArtifact@1" in tasks, job["job"]
        changed = next(s for s in steps if s.get("name") == "changed")
        assert '--base "origin/$(System.PullRequest.TargetBranchName)"' in changed["script"]


def test_prod_deploys_behind_environment_with_automatic_rollback(
    azure_pipelines: dict[str, Any], pm: ModuleType
) -> None:
    document = azure_pipelines["prod"].document
    by_name = {s["stage"]: s for s in document["stages"]}
    for stage in ("apply", "deploy"):
        for job in by_name[stage]["jobs"]:
            assert "deployment" in job and job["environment"] == "genaiops-prod", (stage, job)
    for job in by_name["deploy"]["jobs"]:
        failure = job["strategy"]["runOnce"]["on"]["failure"]["steps"]
        assert ("make", "rollback") in pm.kinds(pm.step_scripts(failure))
    kinds = set().union(*(pm.kinds(s) for s in pm.azure_units(document).values()))
    assert ("make", "build") not in kinds and ("genaiops", "push") not in kinds, (
        "prod promotes, never rebuilds"
    )
    assert ("genaiops", "promote") in kinds
    apply_steps = by_name["apply"]["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
    download = next(s for s in apply_steps if s.get("task") == "DownloadPipelineArtifact@2")
    assert download["inputs"]["artifactName"] == "plan-prod"


def test_azure_sign_in_is_workload_identity_and_secrets_stay_out_of_logs(
    pm: ModuleType, azure_pipelines: dict[str, Any]
) -> None:
    for name, expansion in azure_pipelines.items():
        text = yaml.safe_dump(expansion.document)
        assert "servicePrincipalKey" not in text and "client_secret" not in text.lower(), name
        for step in pm.steps_of(expansion.document):
            if str(step.get("task", "")).startswith("AzureCLI@"):
                assert step["inputs"]["keepAzSessionActive"] is True, "the CLI session must refresh"
                assert step["inputs"].get("addSpnToEnvironment") is not True, "no static idToken"
                assert step["inputs"]["azureSubscription"] in ("genaiops-dev", "genaiops-prod")
                env = dict(step.get("env") or {})
                assert env.pop("ARM_OIDC_REQUEST_TOKEN") == "$(System.AccessToken)"
                assert env.pop("SYSTEM_OIDCREQUESTURI") == "$(System.OidcRequestUri)"
                for var, value in env.items():
                    assert value == f"$({var})", "secrets are mapped by name only"
                script = step["inputs"]["inlineScript"]
                assert (
                    'ARM_OIDC_AZURE_SERVICE_CONNECTION_ID="$AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"'
                    in script
                )
                assert "ARM_OIDC_TOKEN" not in script and "idToken" not in script
        for script in pm.step_scripts(expansion.document):
            for command in pm.commands(script):
                if command.tool == "set":
                    assert not any("x" in a for a in command.args if a.startswith("-")), (
                        "set -x echoes secrets"
                    )


def test_each_stage_uses_its_environments_variable_group(
    pm: ModuleType, azure_pipelines: dict[str, Any]
) -> None:
    for name, expansion in azure_pipelines.items():
        for stage in expansion.document["stages"]:
            groups = [v["group"] for v in stage.get("variables", []) if "group" in v]
            envs = {
                a.split("=", 1)[1]
                for s in pm.step_scripts(stage)
                for c in pm.commands(s)
                for a in c.args
                if a.startswith("ENV=")
            }
            envs |= {
                c.args[c.args.index("--env") + 1]
                for s in pm.step_scripts(stage)
                for c in pm.commands(s)
                if "--env" in c.args
            }
            if any(str(st.get("task", "")).startswith("AzureCLI@") for st in pm.steps_of(stage)):
                assert len(groups) == 1, (name, stage["stage"])
                assert envs <= {groups[0].removeprefix("genaiops-")}, (name, stage["stage"], envs)


def test_pip_cache_before_the_first_make(pm: ModuleType, azure_pipelines: dict[str, Any]) -> None:
    def lists(node: Any) -> list[list[Any]]:
        found: list[list[Any]] = []
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "steps" and isinstance(value, list):
                    found.append(value)
                else:
                    found.extend(lists(value))
        elif isinstance(node, list):
            for item in node:
                found.extend(lists(item))
        return found

    for name, expansion in azure_pipelines.items():
        for steps in lists(expansion.document):
            first_make = next((i for i, s in enumerate(steps) if pm.step_scripts(s)), None)
            if first_make is not None:
                assert any(s.get("task") == "Cache@2" for s in steps[:first_make]), name


def test_pipeline_flow_lists_match_the_config(pm: ModuleType) -> None:
    configured = {env: load_config(env).flows for env in ("local", "dev", "prod")}
    names = set(configured["local"])
    assert all(set(flows) == names for flows in configured.values())
    for pipeline in ("pr", "dev", "prod"):
        raw = yaml.safe_load((pm.AZURE_DIR / f"{pipeline}.yml").read_text())
        flows = next(p for p in raw["parameters"] if p["name"] == "flows")["default"]
        assert {f["name"] for f in flows} == names, pipeline
        for flow in flows:
            assert configured["local"][flow["name"]].path in flow["paths"], (pipeline, flow)
            if pipeline == "pr":  # the PR dataset is a dataset of the flow's experiment
                experiment = load_experiment(
                    pm.REPO / configured["local"][flow["name"]].path / "experiment.yaml"
                )
                assert flow["dataset"] in [d.name for d in experiment.datasets], flow


def test_pr_gate_runs_only_the_pr_dataset(pm: ModuleType, azure_pipelines: dict[str, Any]) -> None:
    gate = next(s for s in azure_pipelines["pr"].document["stages"] if s["stage"] == "gate")
    for job in gate["jobs"]:
        flow = job["job"].removeprefix("gate_")
        runs = [
            c
            for s in pm.step_scripts(job)
            for c in pm.commands(s)
            if c.args[:1] in (("experiment",), ("evaluate",))
        ]
        assert len(runs) == 2 and all(c.args[-2:] == ("--dataset", f"{flow}_smoke") for c in runs), runs
    dev_gate = next(s for s in azure_pipelines["dev"].document["stages"] if s["stage"] == "gate")
    assert "--dataset" not in yaml.safe_dump(dev_gate), "dev gates on every dataset"


def test_artifacts_come_from_a_stage_the_consumer_depends_on(
    pm: ModuleType, azure_pipelines: dict[str, Any]
) -> None:
    """The plan apply uses and the digest deploy uses are the ones published earlier in the run."""
    for name, expansion in azure_pipelines.items():
        document = expansion.document
        deps = pm.stage_dependencies(document)
        published = {
            stage["stage"]: {
                s["inputs"]["artifact"]
                for s in pm.steps_of(stage)
                if s.get("task") == "PublishPipelineArtifact@1"
            }
            for stage in document["stages"]
        }
        aliases = {p["pipeline"] for p in (document.get("resources") or {}).get("pipelines", [])}
        downloads = 0
        for stage in document["stages"]:
            for step in pm.steps_of(stage):
                if step.get("task") != "DownloadPipelineArtifact@2":
                    continue
                downloads += 1
                inputs = step["inputs"]
                if inputs["buildType"] == "current":
                    upstream = set().union(*(published[s] for s in pm.transitive(deps, stage["stage"])))
                    assert inputs["artifactName"] in upstream, (name, stage["stage"], inputs["artifactName"])
                else:
                    alias = inputs["definition"].split(".")[2]
                    assert alias in aliases, f"{name}: pipeline resource {alias!r} is not declared"
        if name in ("dev", "prod"):
            assert downloads >= 3, name
    prod = azure_pipelines["prod"].document
    assert prod["resources"]["pipelines"][0]["source"] == "genaiops-dev"
