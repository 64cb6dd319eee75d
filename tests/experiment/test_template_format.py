"""The template's own files work unchanged end to end (issue 12, kind 7).

``fixtures/template_use_case`` is a use case folder in the GenAIOps template's layout and format
(see its README). With only a ``flows.<name>`` entry and an ``aoai`` connection in the config,
``genaiops experiment`` and ``genaiops evaluate`` pass; the gate's primary metric defaults to the
first metric of the first evaluator and says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from release.cli import main
from release.experiment.spec import load_experiment

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "template_use_case"


@pytest.fixture()
def template_config(exp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # type: ignore[no-untyped-def]
    """config/local.yaml plus the use case (a copy of the fixture) and the `aoai` connection."""
    use_case = tmp_path / "web_classification"
    shutil.copytree(FIXTURE, use_case)
    config = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    config["connections"].append(
        {
            "name": "aoai",
            "category": "AzureOpenAI",
            "target": "http://127.0.0.1:${GENAIOPS_MODEL_PORT:-8300}",
            "api_version": "2024-02-01",
            "secret": {"env": "LOCAL_MODEL_API_KEY"},
        }
    )
    config["flows"] = {"web_classification_gt": {"path": str(use_case), "deployment": {"target": "local"}}}
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "local.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("GENAIOPS_CONFIG_DIR", str(config_dir))
    return use_case


def test_template_files_pass_experiment_and_evaluate(exp, template_config: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(exp.args("experiment", "web_classification_gt"))
    out = capsys.readouterr()
    assert code == 0, out.err
    # two node variants x two datasets, every line answered
    assert out.out.count("web_classification_train") >= 4
    code = main(exp.args("evaluate", "web_classification_gt"))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "gate passed: web_classification_gt" in out.out and "(accuracy = " in out.out
    assert "primary_metric: not set" in out.err and "first metric of the first evaluator" in out.err
    pointer = exp.reports / "web_classification_gt" / "latest-evaluation.json"
    report = Path(json.loads(pointer.read_text())["report_dir"])
    summary = json.loads((report / "metrics.json").read_text())
    assert summary["evaluator_metrics"] == {
        "web_classification_flow": ["accuracy"],
        "web_classification_flow_adv": ["accuracy"],
    }
    assert summary["primary_metric"].startswith("accuracy (default: the first metric of evaluator")
    assert all(run["failed_lines"] == 0 and "accuracy" in run["metrics"] for run in summary["runs"])
    assert "first metric of evaluator" in (report / "report.html").read_text()


def test_template_overlays_load_as_the_template_loads_them() -> None:
    base = load_experiment(FIXTURE / "experiment.yaml")
    assert load_experiment(FIXTURE / "experiment.yaml", "dev") == base  # empty overlay
    pr = load_experiment(FIXTURE / "experiment.yaml", "pr")
    assert [d.name for d in pr.datasets] == ["web_classification_pr"] and pr.evaluators == []
    assert pr.name == base.name and pr.flow == "flows/experiment"
    assert base.primary_metric is None and not base.gates.thresholds


def test_template_shorthands_evaluator_flow_and_dataset_by_name(tmp_path: Path) -> None:
    """The template's loader: an evaluator's flow defaults to its name; an evaluator dataset named
    after an experiment dataset, without source/reference, evaluates that dataset on its own lines."""
    shutil.copytree(FIXTURE, tmp_path / "uc")
    (tmp_path / "uc" / "flows" / "evaluation").rename(tmp_path / "uc" / "accuracy_eval")
    text = (tmp_path / "uc" / "experiment.yaml").read_text()
    text = text.replace(
        """- name: web_classification_flow
  flow: flows/evaluation
  datasets:
  - name: web_classification_train_eval
    reference: web_classification_train
    source: data/eval_data.jsonl
""",
        """- name: accuracy_eval
  datasets:
  - name: web_classification_train
""",
    )
    (tmp_path / "uc" / "experiment.yaml").write_text(text)
    experiment = load_experiment(tmp_path / "uc" / "experiment.yaml")
    evaluator = experiment.evaluators[0]
    assert evaluator.flow == "accuracy_eval"
    (dataset,) = evaluator.datasets
    assert (dataset.reference, dataset.source) == ("web_classification_train", "data/data.jsonl")


def test_an_empty_mappings_block_means_no_mappings(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "uc")
    path = tmp_path / "uc" / "experiment.yaml"
    path.write_text(path.read_text().replace('  mappings:\n    url: "${data.url}"\n', "  mappings:\n", 1))
    assert load_experiment(path).datasets[0].mappings == {}
