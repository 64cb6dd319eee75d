"""Every mapping reference is validated before a line runs, for DAG and flex flows (issue 12, kind 2).

prompt flow's column-mapping function (``apply_inputs_mapping``) is the oracle for how a mapping
resolves; ``${run.inputs.x}`` is the referenced run's data line (prompt flow's run submitter).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from release.cli import main
from release.engine import get_engine
from release.errors import UserError
from release.experiment.plan import build_plan, map_inputs
from release.experiment.spec import ExperimentError, load_experiment
from tests.experiment.cases import LINES, classify_case, experiment_yaml, jsonl, write


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return get_engine(tmp_path_factory.mktemp("pf"))


def _plan_error(tmp_path: Path, engine, experiment: str, extra: dict[str, str] | None = None) -> str:  # type: ignore[no-untyped-def]
    path = classify_case(tmp_path, experiment, extra)
    with pytest.raises(ExperimentError) as info:
        build_plan(load_experiment(path), engine, flow_name="compat")
    return str(info.value)


def test_case_04_run_inputs_resolves_to_the_runs_data_line() -> None:
    """Case 04 (promptflow#969): ``${run.inputs.text}`` is the referenced run's data column."""
    from promptflow._utils.inputs_mapping_utils import apply_inputs_mapping

    mappings = {
        "groundtruth": "${data.label}",
        "source": "${run.inputs.text}",
        "prediction": "${run.outputs.label}",
    }
    eval_row, run_row, outputs = {"label": "short"}, {"text": "hi", "label": "short"}, {"label": "short"}
    ours = map_inputs(mappings, eval_row, outputs, run_row)
    theirs = apply_inputs_mapping({"data": eval_row, "run.inputs": run_row, "run.outputs": outputs}, mappings)
    assert ours == theirs == {"groundtruth": "short", "source": "hi", "prediction": "short"}
    # the case's own call: the evaluator reads the run's dataset, so the run's data line is the row
    assert map_inputs(mappings, run_row, outputs)["source"] == "hi"
    literal = {"n": 3, "flag": True, "model": "gpt-4", "text": "${data.text}"}
    assert map_inputs(literal, run_row) == apply_inputs_mapping({"data": run_row}, literal)


def test_run_inputs_reach_the_evaluator_in_a_real_evaluation(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The evaluator's data differs from the run's: ``${run.inputs.text}`` must be the run's text."""
    evaluation = [{"label": r["label"], "text": f"eval-{i}"} for i, r in enumerate(LINES)]
    text = experiment_yaml(eval_mappings='      source: "${run.inputs.text}"\n').replace(
        "    source: data/lines.jsonl\n    mappings:\n      groundtruth",
        "    source: data/eval.jsonl\n    mappings:\n      groundtruth",
    )
    path = classify_case(tmp_path / "case", text, {"data/eval.jsonl": jsonl(evaluation)})
    code = main(exp.args("evaluate", "compat", "--experiment", str(path)))
    assert code == 0, capsys.readouterr().err
    (outputs,) = list(exp.reports.rglob("evaluations/acc/*/*/outputs.jsonl"))
    lines = [json.loads(line) for line in outputs.read_text().splitlines()]
    assert [line["inputs"]["source"] for line in sorted(lines, key=lambda x: x["line"])] == [
        r["text"] for r in LINES
    ]


def test_case_15_mapped_column_missing_on_a_line(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """Case 15 (azure-sdk-for-python#34996): refused before any line runs, naming file, line, column."""
    rows = [LINES[0], {"question": "another tool's column", "label": "long"}, LINES[2]]
    message = _plan_error(tmp_path, engine, experiment_yaml(), {"data/lines.jsonl": jsonl(rows)})
    assert "lines.jsonl: line 2: missing column(s) ['text']" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            '      source: "${inputs.text}"\n',
            "evaluators[0].datasets[0].mappings.source: ${inputs.text} refers to nothing",
        ),
        ('      source: "${run.inputs.question}"\n', "${run.inputs.question} names column 'question'"),
        (
            '      source: "${run.outputs.kind}"\n',
            "mappings.source: ${run.outputs.kind}: the flow has no output 'kind'",
        ),
        (
            '      missing_input: "${data.text}"\n',
            "mappings.missing_input: the flow has no input 'missing_input'",
        ),
    ],
)
def test_bad_evaluator_references_are_refused(tmp_path: Path, engine, change: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    message = _plan_error(tmp_path, engine, experiment_yaml(eval_mappings=change))
    assert expected in message and "experiment.yaml" in message


def test_run_references_in_a_flow_dataset_and_default_mapping(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    text = experiment_yaml().replace('    text: "${data.text}"\n', '    text: "${run.inputs.text}"\n', 1)
    assert "datasets[0].mappings.text: ${run.inputs.text}: a flow's own dataset has no referenced run" in (
        _plan_error(tmp_path / "a", engine, text)
    )
    # no mapping for `text` and no default: prompt flow reads the column of that name
    unmapped = experiment_yaml().replace('  mappings:\n    text: "${data.text}"\n', "", 1)
    path = classify_case(tmp_path / "b", unmapped)
    plan = build_plan(load_experiment(path), engine, flow_name="compat")
    assert plan.runs[0].inputs[0] == {"text": "hi"}
    renamed = [{"body": r["text"], "label": r["label"]} for r in LINES]
    message = _plan_error(tmp_path / "c", engine, unmapped, {"data/lines.jsonl": jsonl(renamed)})
    assert "input 'text' has no mapping and no default" in message and "add mappings.text" in message


FLEX_OUTPUTS = """\
import dataclasses
from typing import TypedDict

import pydantic


@dataclasses.dataclass
class Labelled:
    label: str
    length: int


class LabelledDict(TypedDict):
    label: str
    confidence: float


class LabelledModel(pydantic.BaseModel):
    label: str
    votes: int = 0


def as_dataclass(text: str) -> Labelled:
    return Labelled("short", len(text))


def as_typeddict(text: str) -> LabelledDict:
    return {"label": "short", "confidence": 1.0}


def as_model(text: str) -> LabelledModel:
    return LabelledModel(label="short")


def as_text(text: str) -> str:
    return "short"


def as_dict(text: str, extra: int = 1) -> dict:
    return {"label": "short"}
"""


@pytest.mark.parametrize(
    ("entry", "outputs"),
    [
        ("as_dataclass", ["label", "length"]),
        ("as_typeddict", ["label", "confidence"]),
        ("as_text", ["output"]),
        ("as_dict", None),
    ],
)
def test_flex_outputs_come_from_the_return_annotation(tmp_path: Path, engine, entry: str, outputs) -> None:  # type: ignore[no-untyped-def]
    flow = write(
        tmp_path / f"flex_{entry}",
        {"shapes.py": FLEX_OUTPUTS, "flow.flex.yaml": f"entry: shapes:{entry}\n"},
    )
    info = engine.describe(flow)
    assert info.kind == "flex" and info.inputs[0] == "text"
    assert info.outputs == outputs
    if entry == "as_dict":
        assert info.optional_inputs == ["extra"]


def test_a_pydantic_return_is_refused_with_the_fix(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """prompt flow 1.18.5 fails every line returning a pydantic model (FlowOutputUnserializable)."""
    flow = write(
        tmp_path / "flex_model", {"shapes.py": FLEX_OUTPUTS, "flow.flex.yaml": "entry: shapes:as_model\n"}
    )
    with pytest.raises(UserError) as info:
        engine.describe(flow)
    message = str(info.value)
    assert "flow.flex.yaml" in message and "LabelledModel" in message and "TypedDict" in message


def test_flex_run_outputs_reference_checked_against_annotation(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    text = experiment_yaml().replace("flow: flow", "flow: flexflow", 1)
    files = {"flexflow/shapes.py": FLEX_OUTPUTS, "flexflow/flow.flex.yaml": "entry: shapes:as_dataclass\n"}
    path = classify_case(tmp_path / "a", text, files)
    plan = build_plan(load_experiment(path), engine, flow_name="compat")  # label is a dataclass field
    assert plan.info.outputs == ["label", "length"]
    # a flow returning a plain str has only `output`: refused, naming file and field
    files["flexflow/flow.flex.yaml"] = "entry: shapes:as_text\n"
    message = _plan_error(tmp_path / "b", engine, text, files)
    assert "experiment.yaml: evaluators[0].datasets[0].mappings.prediction: ${run.outputs.label}" in message
    assert "the flow has no output 'label'; outputs: output" in message
