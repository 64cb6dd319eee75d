"""``experiment.<env>.yaml`` overlays behave as in the GenAIOps template (issue 12, kind 6).

The template's loader (``llmops/common/experiment.py``, ``_apply_overlay``): a block in the overlay
replaces the base block whole; ``name``/``flow`` always come from the base file; an empty block
empties it; an empty overlay changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from release.cli import main
from release.engine import get_engine
from release.experiment.plan import build_plan
from release.experiment.spec import ExperimentError, load_experiment
from tests.experiment.cases import classify_case, experiment_yaml

REPO = Path(__file__).resolve().parents[2]

BASE = """\
name: overlay_blocks
flow: flow
datasets:
- name: lines_full
  source: azureml:lines_full:3
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: evaluation
  datasets:
  - name: lines_full_eval
    reference: lines_full
    source: azureml:lines_full:3
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.label}"
primary_metric: accuracy
gates:
  thresholds:
    accuracy: {min: 0.6}
"""

LOCAL = """\
datasets:
- name: lines_smoke
  source: data/lines.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: evaluation
  datasets:
  - name: lines_smoke_eval
    reference: lines_smoke
    source: data/lines.jsonl
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.label}"
"""


def test_case_14_overlay_replaces_the_datasets_and_evaluators_blocks(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Case 14 (genaiops-promptflow-template#142): with --env local only the overlay's datasets run."""
    path = classify_case(tmp_path / "case", BASE, {"experiment.local.yaml": LOCAL})
    experiment = load_experiment(path, "local")
    assert [d.name for d in experiment.datasets] == ["lines_smoke"]
    assert [d.name for e in experiment.evaluators for d in e.datasets] == ["lines_smoke_eval"]
    assert experiment.gates.thresholds["accuracy"].min == 0.6  # blocks the overlay does not name stay
    assert [d.name for d in load_experiment(path, "dev").datasets] == ["lines_full"]
    code = main(exp.args("evaluate", "overlay_blocks", "--experiment", str(path)))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "lines_smoke" in out.out and "lines_full" not in out.out + out.err


def test_overlay_replacing_evaluators_hyperparameters_and_keeping_name_and_flow(tmp_path: Path) -> None:
    overlay = """\
name: renamed
flow: elsewhere
evaluators:
- name: strict
  flow: evaluation
  datasets:
  - name: lines_eval_strict
    reference: lines
    source: data/lines.jsonl
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.label}"
gates:
  thresholds:
    accuracy: {max: 1.0}
"""
    path = classify_case(
        tmp_path, experiment_yaml(), {"experiment.dev.yaml": overlay, "experiment.pr.yaml": ""}
    )
    dev = load_experiment(path, "dev")
    assert (dev.name, dev.flow) == ("compat", "flow")
    assert [(e.name, [d.name for d in e.datasets]) for e in dev.evaluators] == [
        ("strict", ["lines_eval_strict"])
    ]
    assert dev.gates.thresholds["accuracy"].min is None and dev.gates.thresholds["accuracy"].max == 1.0
    assert dev.primary_metric == "accuracy"
    assert load_experiment(path, "pr") == load_experiment(path)  # an empty overlay changes nothing
    (tmp_path / "experiment.pr.yaml").write_text("evaluators:\n")
    assert load_experiment(path, "pr").evaluators == []  # an empty block empties it


def test_replacing_datasets_without_evaluators_is_refused_with_the_fix(tmp_path: Path) -> None:
    overlay = 'datasets:\n- name: other\n  source: data/lines.jsonl\n  mappings:\n    text: "${data.text}"\n'
    path = classify_case(tmp_path, experiment_yaml(), {"experiment.dev.yaml": overlay})
    with pytest.raises(ExperimentError) as info:
        build_plan(load_experiment(path, "dev"), get_engine(tmp_path / "pf"), flow_name="compat")
    message = str(info.value)
    assert "experiment.yaml + " in message and "evaluators[0].datasets[0].reference: 'lines'" in message
    assert "give it an 'evaluators' block too" in message


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_shipped_overlays_mean_what_they_meant_under_the_old_merge(env: str) -> None:
    wc = load_experiment(REPO / "flows" / "web_classification" / "experiment.yaml", env)
    base = load_experiment(REPO / "flows" / "web_classification" / "experiment.yaml")
    assert [c.name for c in wc.connections] == ["local_openai", "aoai"]
    assert wc.connection_overrides == {"local_openai": "aoai"}
    assert wc.hyperparameters == {**base.hyperparameters, "deployment_name": ["gpt-35-turbo"]}
    assert (wc.datasets, wc.evaluators, wc.gates) == (base.datasets, base.evaluators, base.gates)
    st = load_experiment(REPO / "flows" / "support_triage" / "experiment.yaml", env)
    st_base = load_experiment(REPO / "flows" / "support_triage" / "experiment.yaml")
    assert [c.name for c in st.connections] == ["local_openai", "aoai"]
    assert st.hyperparameters == st_base.hyperparameters and st.runtime == "automatic"
