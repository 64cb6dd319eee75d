"""Experiment files: the template format loads unchanged, overlays replace blocks, expansion, validation errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from release.cli import main
from release.engine import get_engine
from release.experiment.expand import expand
from release.experiment.plan import build_plan
from release.experiment.spec import ExperimentError, load_experiment

REPO = Path(__file__).resolve().parents[2]
WC = REPO / "flows" / "web_classification"

# The GenAIOps template's web_classification experiment.yaml, byte for byte in its structure.
TEMPLATE_EXPERIMENT = """name: web_classification
flow: flows/experiment

connections:
- name: aoai
  connection_type: AzureOpenAIConnection
  api_endpoint: ${api_endpoint}
  api_version: 2023-07-01-preview
  api_key: ${api_key}
  api_type: azure

datasets:
- name: web_classification_train
  source: data/data.jsonl
  description: "This dataset is for prompt experiments."
  mappings:
    url: "${data.url}"

evaluators:
- name: web_classification_flow
  flow: flows/evaluation
  datasets:
  - name: web_classification_train_eval
    reference: web_classification_train
    source: data/eval_data.jsonl
    description: "This dataset is for evaluating flows."
    mappings:
      groundtruth: "${data.answer}"
      prediction: "${run.outputs.category}"
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return get_engine(tmp_path_factory.mktemp("pf"))


def _template_use_case(root: Path) -> Path:
    shutil.copytree(
        WC, root / "flows" / "experiment", ignore=shutil.ignore_patterns("evaluation", "data", "pages")
    )
    shutil.copytree(WC / "evaluation", root / "flows" / "evaluation")
    (root / "data").mkdir()
    rows = [
        {"url": "https://www.example.org/a", "answer": "App"},
        {"url": "https://example.org/b", "answer": "Movie"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (root / "data" / "data.jsonl").write_text(text)
    (root / "data" / "eval_data.jsonl").write_text(text)
    (root / "experiment.yaml").write_text(TEMPLATE_EXPERIMENT)
    return root / "experiment.yaml"


def test_template_experiment_loads_unchanged_and_plans(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    path = _template_use_case(tmp_path)
    experiment = load_experiment(path, "local")
    assert experiment.flow_dir() == (tmp_path / "flows" / "experiment").resolve()
    assert experiment.connections[0].name == "aoai"
    plan = build_plan(experiment, engine, flow_name="web_classification")
    # template mode over the node variants of summarize_text_content: variant_0 and variant_1
    assert sorted(v.variants["summarize_text_content"] for v in plan.variants) == ["variant_0", "variant_1"]
    assert plan.runs[0].inputs[0] == {"url": "https://www.example.org/a"}


def test_dev_overlay_replaces_connections_hyperparameters_and_overrides(tmp_path: Path) -> None:
    experiment = load_experiment(WC / "experiment.yaml", "dev")
    assert experiment.connection_overrides == {"local_openai": "aoai"}
    assert [c.name for c in experiment.connections] == ["local_openai", "aoai"]
    assert experiment.hyperparameters["deployment_name"] == ["gpt-35-turbo"]
    assert len(experiment.datasets) == 2  # blocks the overlay does not name are kept
    assert load_experiment(WC / "experiment.yaml", "local").connection_overrides == {}


def test_template_and_grid_expansion(engine) -> None:  # type: ignore[no-untyped-def]
    experiment = load_experiment(WC / "experiment.yaml", "local").model_copy(
        update={
            "hyperparameters": {"classify_with_llm.temperature": [0.0, 1.0], "max_tokens": [64, 128, 256]}
        }
    )
    info = engine.describe(WC)
    template = expand(experiment, info, "template")
    grid = expand(experiment, info, "grid")
    # template: default point, + variant_1, + temperature 1.0, + max_tokens 128 and 256 (others at first value)
    assert len(template) == 5
    assert sum(1 for v in template if v.variants["summarize_text_content"] == "variant_1") == 1
    assert all(
        v.params["max_tokens"] == 64 for v in template if v.params["classify_with_llm.temperature"] == 1.0
    )
    # grid: 2 variants x 2 temperatures x 3 max_tokens
    assert len(grid) == 12
    assert len({v.id for v in grid}) == 12
    restricted = expand(
        experiment.model_copy(update={"variants": {"summarize_text_content": ["variant_1"]}}), info, "grid"
    )
    assert {v.variants["summarize_text_content"] for v in restricted} == {"variant_1"}


def test_variant_overrides_reach_the_resolved_flow(engine) -> None:  # type: ignore[no-untyped-def]
    from release.engine.base import FlowVariant

    variant = FlowVariant(
        {"summarize_text_content": "variant_1"}, {"classify_with_llm.temperature": 0.7, "max_tokens": 50}
    )
    dag = engine.resolved_dag(WC, variant, {"local_openai": "aoai"})
    nodes = {n["name"]: n for n in dag["nodes"]}
    assert nodes["summarize_text_content"]["source"]["path"] == "summarize_text_content__variant_1.jinja2"
    assert nodes["classify_with_llm"]["inputs"]["temperature"] == 0.7
    assert nodes["summarize_text_content"]["inputs"]["temperature"] == 0.3  # untouched by a node-scoped axis
    assert nodes["summarize_text_content"]["inputs"]["max_tokens"] == 50  # bare axis: every LLM node
    assert nodes["classify_with_llm"]["inputs"]["connection"] == "aoai"
    assert "node_variants" not in dag


def _bad_experiment(tmp_path: Path, change: str) -> Path:
    text = (WC / "experiment.yaml").read_text()
    text = text.replace("flow: .", f"flow: {WC}").replace("flow: evaluation", f"flow: {WC / 'evaluation'}")
    text = text.replace("source: data/", f"source: {WC}/data/")
    old, new = change.split(" => ")
    assert old in text
    path = tmp_path / "experiment.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("data/full.jsonl => data/nope.jsonl", "datasets[1].source: dataset file"),
        (
            "mode: template => variants: {summarize_text_content: [variant_9]}",
            "variants.summarize_text_content: unknown variant 'variant_9'",
        ),
        (
            'groundtruth: "${data.category}" => groundtruth: "${data.label}"',
            "mappings.groundtruth: ${data.label} names column 'label'",
        ),
        (
            'url: "${data.url}" => link: "${data.url}"',
            "datasets[0].mappings.link: the flow has no input 'link'",
        ),
        (
            'prediction: "${run.outputs.category}" => prediction: "${run.outputs.kind}"',
            "the flow has no output 'kind'",
        ),
        ("classify_with_llm.temperature: => classify_llm.temperature:", "unknown LLM node 'classify_llm'"),
    ],
)
def test_bad_experiment_fails_before_any_run(exp, tmp_path: Path, change: str, expected: str, capsys) -> None:  # type: ignore[no-untyped-def]
    path = _bad_experiment(tmp_path, change)
    before = exp.services.completions()
    code = main(exp.args("evaluate", "web_classification", "--experiment", str(path)))
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
    assert str(path) in err or "experiment.yaml" in err  # names the file
    assert exp.services.completions() == before  # nothing ran
    assert not exp.reports.exists()  # nothing half-done


def test_load_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("name: x\ndatasets: []\nconcurrency: 0\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    message = str(info.value)
    assert "experiment.yaml" in message and "datasets" in message and "concurrency" in message


def test_export_variant_bakes_the_selection_into_a_flow_copy(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from release.engine.base import FlowVariant

    dag_dir = engine.export_variant(
        WC, FlowVariant({"summarize_text_content": "variant_1"}, {"temperature": 0.1}), tmp_path / "wc"
    )
    dag = yaml.safe_load((dag_dir / "flow.dag.yaml").read_text())
    assert "node_variants" not in dag
    summarize = next(n for n in dag["nodes"] if n["name"] == "summarize_text_content")
    assert summarize["source"]["path"] == "summarize_text_content__variant_1.jinja2"
    assert summarize["inputs"]["temperature"] == 0.1
    flex_dir = engine.export_variant(
        REPO / "flows" / "support_triage",
        FlowVariant({}, {"examples": "extended"}),
        tmp_path / "st",
        {"local_openai": "aoai"},
    )
    init = yaml.safe_load((flex_dir / "flow.flex.yaml").read_text())["init"]
    assert init["examples"]["default"] == "extended" and init["connection"]["default"] == "aoai"
    assert engine.describe(flex_dir).init_params["examples"] == "extended"
