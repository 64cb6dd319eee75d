"""Hyperparameters by tool signature, bounded model calls, and cost/latency per run (issues 12.5, 12.8, 13.2).

The flows here are built in the test's folder and run for real (prompt flow's executor, the local
model endpoint over HTTP).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from release.cli import main
from release.config import ModelPrice, Pricing
from release.engine import get_engine
from release.engine.base import CallUsage, FlowVariant
from release.errors import CheckFailed
from release.experiment import pipeline
from release.experiment.cost import call_cost, cost_and_latency
from release.experiment.evaluate import RunMetrics
from release.experiment.expand import expand
from release.experiment.gate import run_gate
from release.experiment.pipeline import Options
from release.experiment.spec import ExperimentError, load_experiment

REPO = Path(__file__).resolve().parents[2]

PROMPT = """\
# system:
Answer the question from the notes in one sentence.

# user:
Notes: The harbour of Velmora opens at six. Ferries to Ostrand leave every hour from pier two.
Question: {{question}}
"""

QUESTIONS = [
    "When does the harbour of Velmora open?",
    "Where do the ferries to Ostrand leave from?",
    "How often do ferries leave for Ostrand?",
]


def _dag_flow(root: Path, node: str) -> Path:
    flow = root / "flow"
    flow.mkdir(parents=True)
    (flow / "answer.jinja2").write_text(PROMPT)
    (flow / "flow.dag.yaml").write_text(
        textwrap.dedent(
            """\
            inputs:
              question: {type: string}
            outputs:
              answer: {type: string, reference: "${answer.output}"}
            nodes:
            """
        )
        + textwrap.indent(node, "")
    )
    return flow


# promptflow-tools' generic LLM tool; the node sets neither max_tokens nor top_p nor seed
CUSTOM_LLM_NODE = """\
- name: answer
  type: custom_llm
  source: {type: package_with_prompt, tool: promptflow.tools.llm.llm, path: answer.jinja2}
  inputs:
    connection: local_openai
    api: chat
    deployment_name: gpt-35-turbo
    temperature: 0.0
    question: ${inputs.question}
"""

# prompt flow's built-in LLM node type (tool promptflow.tools.openai.OpenAI.chat)
LLM_NODE = """\
- name: answer
  type: llm
  source: {type: code, path: answer.jinja2}
  provider: OpenAI
  api: chat
  connection: local_openai
  inputs:
    model: gpt-35-turbo
    question: ${inputs.question}
"""


def _experiment(root: Path, axes: str, extra: str = "") -> Path:
    data = root / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    path = root / "experiment.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: hyper
            flow: flow
            connections:
            - name: local_openai
              connection_type: OpenAIConnection
            datasets:
            - name: questions
              source: questions.jsonl
              mappings:
                question: "${data.question}"
            mode: template
            hyperparameters:
            """
        )
        + textwrap.indent(axes, "  ")
        + extra
    )
    return path


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return get_engine(tmp_path_factory.mktemp("pf") / "promptflow")


@pytest.mark.parametrize("node", [CUSTOM_LLM_NODE, LLM_NODE], ids=["custom_llm", "llm"])
def test_bare_names_reach_every_llm_node_whose_tool_accepts_them(engine, tmp_path: Path, node: str) -> None:  # type: ignore[no-untyped-def]
    flow = _dag_flow(tmp_path, node)
    experiment = load_experiment(
        _experiment(tmp_path, "max_tokens: [1, 400]\ntop_p: [0.1, 0.9]\nseed: [7]\n")
    )
    info = engine.describe(flow)
    assert {"max_tokens", "top_p", "seed", "temperature"} <= set(info.llm_params["answer"])
    assert "connection" not in info.llm_params["answer"]  # wiring, not a hyperparameter
    seen = set()
    for variant in expand(experiment, info):
        resolved = next(n for n in engine.resolved_dag(flow, variant, {})["nodes"] if n["name"] == "answer")
        assert resolved["inputs"]["max_tokens"] == variant.params["max_tokens"]
        assert resolved["inputs"]["top_p"] == variant.params["top_p"]
        assert resolved["inputs"]["seed"] == 7
        effective = engine.effective_inputs(flow, variant)
        assert effective["answer"]["max_tokens"] == variant.params["max_tokens"]
        assert "question" not in effective["answer"]  # a flow reference, not a parameter
        seen.add((variant.params["max_tokens"], variant.params["top_p"]))
    assert seen == {(1, 0.1), (400, 0.1), (1, 0.9)}


@pytest.mark.parametrize(
    ("axes", "expected"),
    [
        ("temprature: [0.1]\n", "hyperparameters.temprature: no LLM node's tool accepts 'temprature'"),
        ("answer.tempreature: [0.1]\n", "hyperparameters.answer.tempreature: the tool of LLM node 'answer'"),
        ("best_of_n: [2]\n", "hyperparameters.best_of_n: no LLM node's tool accepts 'best_of_n'"),
    ],
)
def test_a_name_no_node_accepts_is_refused_naming_file_and_axis(
    engine, tmp_path: Path, axes: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    flow = _dag_flow(tmp_path, CUSTOM_LLM_NODE)
    experiment = load_experiment(_experiment(tmp_path, axes))
    with pytest.raises(ExperimentError) as caught:
        expand(experiment, engine.describe(flow))
    assert "experiment.yaml" in str(caught.value)
    assert expected in str(caught.value)


def _options(exp, flow: str, experiment_file: Path | None = None, **more) -> Options:  # type: ignore[no-untyped-def]
    return Options(
        flow=flow,
        env="local",
        reports_dir=exp.reports,
        state_dir=exp.state,
        progress=False,
        start_local=False,
        experiment_file=experiment_file,
        **more,
    )


def test_bare_max_tokens_changes_the_answers_and_runs_record_effective_inputs(exp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _dag_flow(tmp_path, CUSTOM_LLM_NODE)
    path = _experiment(tmp_path, "max_tokens: [1, 400]\n")
    result = pipeline.run(_options(exp, "hyper", path), with_evaluation=False)
    answers = {
        r.job.variant.params["max_tokens"]: [line.outputs["answer"] for line in r.lines] for r in result.runs
    }
    assert all(len(a.split()) <= 1 for a in answers[1])  # one token: the model really got max_tokens=1
    assert all(len(a.split()) > 3 for a in answers[400])
    data = json.loads((result.report_dir / "metrics.json").read_text())
    effective = {r["params"]["max_tokens"]: r["effective_inputs"]["answer"] for r in data["runs"]}
    assert effective[1]["max_tokens"] == 1 and effective[400]["max_tokens"] == 400
    assert effective[1]["deployment_name"] == "gpt-35-turbo" and effective[1]["temperature"] == 0.0


# -- bounded model calls ----------------------------------------------------------------------


def test_hanging_calls_are_abandoned_and_retried_so_every_line_succeeds(exp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _dag_flow(tmp_path, CUSTOM_LLM_NODE)
    lines = 12
    data = tmp_path / "questions.jsonl"
    path = _experiment(tmp_path, "max_tokens: [64]\n", "request_timeout_s: 1.5\nmax_retries: 4\n")
    data.write_text(
        "".join(json.dumps({"question": f"{QUESTIONS[i % 3]} ({i})"}) + "\n" for i in range(lines))
    )
    before = exp.services.admin("/admin/stats")
    exp.services.faults(hang_rate=0.25, hang_max_s=5)
    try:
        result = pipeline.run(_options(exp, "hyper", path), with_evaluation=False)
    finally:
        exp.services.faults(hang_rate=0.0)
    after = exp.services.admin("/admin/stats")
    hung = after["injected"]["hang"] - before["injected"]["hang"]
    answered = after["completions"] - before["completions"]
    requests = after["requests"] - before["requests"]
    assert all(line.error is None for r in result.runs for line in r.lines)
    assert sum(len(r.lines) for r in result.runs) == lines
    assert hung >= 2  # calls really hung ...
    assert result.retries >= hung  # ... and each was abandoned and its line tried again
    assert answered == lines  # one answered call per line: a hung call got no answer ...
    assert requests >= lines + hung  # ... and was sent again
    assert max(line.attempts for r in result.runs for line in r.lines) >= 2


def test_a_call_that_always_hangs_fails_the_line_with_the_reason(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _dag_flow(tmp_path, CUSTOM_LLM_NODE)
    path = _experiment(tmp_path, "max_tokens: [64]\n", "request_timeout_s: 0.5\nmax_retries: 1\n")
    exp.services.faults(hang_rate=1.0, hang_max_s=3)
    try:
        with pytest.raises(CheckFailed) as caught:
            pipeline.run(_options(exp, "hyper", path), with_evaluation=False)
    finally:
        exp.services.faults(hang_rate=0.0)
    message = str(caught.value)
    assert "ModelCallTimeout" in message and "request_timeout_s" in message
    assert "failed after 2 attempt(s)" in message


@pytest.mark.parametrize("value", ["0", "-1", "601", "soon"])
def test_request_timeout_is_validated(tmp_path: Path, value: str) -> None:
    path = _experiment(tmp_path, "max_tokens: [1]\n", f"request_timeout_s: {value}\n")
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    assert "request_timeout_s" in str(caught.value)


# -- cost and latency -------------------------------------------------------------------------

PRICES = Pricing(
    currency="EUR",
    models={
        "gpt-35-turbo": ModelPrice(prompt_per_1k=0.5, completion_per_1k=1.5),
        "judge-deployment": ModelPrice(prompt_per_1k=2.0, completion_per_1k=4.0),
    },
)


def test_cost_and_latency_against_hand_computed_values() -> None:
    # line 1: 1000 prompt + 200 completion tokens on gpt-35-turbo = 0.5 + 0.3 = 0.8
    # line 2: 500 + 100 on the deployment "judge-deployment" (model name differs) = 1.0 + 0.4 = 1.4
    lines = [
        ([CallUsage("gpt-35-turbo", "gpt-35-turbo", 1000, 200)], 10.0),
        ([CallUsage("judge-deployment", "gpt-4o", 500, 100)], 20.0),
        ([], 30.0),
        ([], 40.0),
        ([], 50.0),
    ]
    out = cost_and_latency(lines, PRICES)
    assert out["tokens_prompt"] == 1500 and out["tokens_completion"] == 300 and out["tokens_total"] == 1800
    assert out["cost_total"] == pytest.approx(2.2)
    assert out["cost_per_line"] == pytest.approx(2.2 / 5)
    # linear interpolation over [10, 20, 30, 40, 50]: p50 = 30, p95 = 40 + 0.8 * 10, p99 = 40 + 0.96 * 10
    assert (out["latency_p50_ms"], out["latency_p95_ms"], out["latency_p99_ms"]) == (30.0, 48.0, 49.6)


def test_unknown_model_or_missing_usage_makes_cost_na_never_zero() -> None:
    unknown = cost_and_latency([([CallUsage("mystery", "mystery-1", 10, 5)], 5.0)], PRICES)
    assert unknown["cost_total"] is None and unknown["cost_per_line"] is None
    assert unknown["tokens_total"] == 15  # tokens are still known
    streamed = cost_and_latency([([CallUsage("gpt-35-turbo", None, None, None)], 5.0)], PRICES)
    assert streamed["tokens_total"] is None and streamed["cost_total"] is None
    assert call_cost(CallUsage(None, "gpt-35-turbo", 0, 0), PRICES) == 0.0  # priced by model name
    unrecorded = cost_and_latency([(None, 5.0), ([], 7.0)], PRICES)  # e.g. a workspace run
    assert unrecorded["tokens_total"] is None and unrecorded["cost_total"] is None
    assert unrecorded["latency_p50_ms"] == 6.0
    nothing = cost_and_latency([], PRICES)
    assert nothing["latency_p50_ms"] is None and nothing["cost_per_line"] is None


def _row(variant: str, cost: float | None, p95: float) -> RunMetrics:
    return RunMetrics(
        variant,
        FlowVariant({}, {"temperature": variant}),
        "questions",
        4,
        0,
        {"accuracy": 1.0},
        ["quality"],
        {"cost_per_line": cost, "cost_total": None if cost is None else cost * 4, "latency_p95_ms": p95},
        "USD",
    )


def test_gates_threshold_cost_and_latency_and_fail_on_na_cost(tmp_path: Path) -> None:
    path = _experiment(
        tmp_path,
        "temperature: [0.0]\n",
        "primary_metric: accuracy\ngates:\n  thresholds:\n    cost_per_line: {max: 0.01}\n"
        "    latency_p95_ms: {max: 500}\n",
    )
    experiment = load_experiment(path)
    outcome = run_gate(experiment, [_row("cheap", 0.002, 120.0), _row("slow", 0.002, 900.0)], None)
    assert outcome.passed and outcome.chosen is not None and outcome.chosen.variant_id == "cheap"
    assert any("latency_p95_ms = 900.0000 is above the threshold max 500" in r for r in outcome.rejected)
    outcome = run_gate(experiment, [_row("unpriced", None, 120.0)], None)
    assert not outcome.passed
    assert any("cost_per_line is n/a" in f and "pricing.models" in f for f in outcome.failures)
    # metrics.json round trip keeps the figures apart from the quality metrics
    row = RunMetrics.from_json(json.loads(json.dumps(_row("x", None, 1.0).to_json())))
    assert row.metrics == {"accuracy": 1.0} and row.cost_latency["cost_per_line"] is None


def test_runs_report_tokens_cost_and_latency_per_variant(exp) -> None:  # type: ignore[no-untyped-def]
    code = main(exp.args("experiment", "web_classification", "--dataset", "web_classification_smoke"))
    assert code == 0
    report = next((exp.reports / "web_classification").glob("*/metrics.json"))
    data = json.loads(report.read_text())
    for run in data["runs"]:
        metrics = run["metrics"]
        assert run["currency"] == "USD"
        assert metrics["tokens_total"] == metrics["tokens_prompt"] + metrics["tokens_completion"] > 0
        # config/local.yaml prices gpt-35-turbo: cost = tokens x list price, per line over the lines
        expected = metrics["tokens_prompt"] / 1000 * 0.0005 + metrics["tokens_completion"] / 1000 * 0.0015
        assert metrics["cost_total"] == pytest.approx(expected, rel=1e-6)
        assert metrics["cost_per_line"] == pytest.approx(expected / run["lines"], rel=1e-6)
        assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p95_ms"] <= metrics["latency_p99_ms"]
        assert run["effective_inputs"]["classify_with_llm"]["deployment_name"] == "gpt-35-turbo"
    header = (report.parent / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("tokens_prompt", "tokens_completion", "tokens_total", "cost_total", "cost_per_line"):
        assert key in header
    assert {"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "currency"} <= set(header)
