"""The gate decides only on numbers, on the data it names, with intervals and paired tests.

Unit level: ``run_gate`` over hand-made runs and lines. CLI level: ``genaiops gate --report`` over
an evaluation folder as ``evaluate`` writes it (the NaN case from a public bug report, and the
partial runs that must not change what a release deploys).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from release.cli import main
from release.engine.base import FlowVariant
from release.experiment.contamination import Hit
from release.experiment.evaluate import RunMetrics
from release.experiment.gate import run_gate
from release.experiment.lines import DatasetLines
from release.experiment.spec import Experiment, ExperimentError, load_experiment
from release.registry.base import Selection


def _experiment(gates: dict[str, Any], **more: Any) -> Experiment:
    data = {
        "name": "t",
        "datasets": [{"name": "full", "source": "full.jsonl"}, {"name": "smoke", "source": "smoke.jsonl"}],
        "primary_metric": "accuracy",
        "primary_dataset": "full",
        "gates": gates,
        **more,
    }
    return Experiment.model_validate(data)


def _run(variant: str, metrics: dict[str, Any], dataset: str = "full", lines: int = 20) -> RunMetrics:
    return RunMetrics(variant, FlowVariant({}, {"v": variant}), dataset, lines, 0, metrics)


def _lines(dataset: str, scores: dict[str, list[float]], metric: str = "accuracy") -> DatasetLines:
    data = DatasetLines(dataset, variants=list(scores))
    count = len(next(iter(scores.values())))
    data.inputs = {i: {"text": f"line {i}"} for i in range(count)}
    for variant, values in scores.items():
        data.outputs[variant] = {i: {"label": str(v)} for i, v in enumerate(values)}
        data.errors[variant] = {i: None for i in range(count)}
        data.scores[variant] = {i: {metric: v} for i, v in enumerate(values)}
    return data


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (math.nan, "nan is not a finite number"),
        (math.inf, "inf is not a finite number"),
        ("0.9", "'0.9' is not a number"),
        (None, "missing"),
        ("null", "null (not a number)"),  # what metrics.json holds for a NaN
    ],
)
def test_a_metric_that_is_not_a_finite_number_fails_the_gate(value: Any, shown: str) -> None:
    exp = _experiment({"thresholds": {"accuracy": {"min": 0.5}}})
    metrics = (
        {"line_success_rate": 1.0} if value is None else {"accuracy": None if value == "null" else value}
    )
    good = _run("good", {"accuracy": 0.9})
    outcome = run_gate(exp, [good, _run("bad", metrics)], None)
    assert not outcome.passed and outcome.chosen is None  # one bad number: nothing is selected
    assert f"variant bad: dataset full: accuracy = {shown}" in outcome.failures[0]


def test_a_threshold_metric_missing_from_one_dataset_fails() -> None:
    exp = _experiment({"thresholds": {"groundedness": {"min": 0.5}}})
    runs = [
        _run("a", {"accuracy": 0.9, "groundedness": 0.9}),
        _run("a", {"accuracy": 0.9}, dataset="smoke"),
    ]
    outcome = run_gate(exp, runs, None)
    assert not outcome.passed
    assert outcome.failures == [
        "variant a: dataset smoke: groundedness = missing: the gate decides only on finite numbers; "
        "fix the evaluator or the data"
    ]


def test_the_primary_dataset_must_have_run_unless_the_gate_names_another() -> None:
    exp = _experiment({"thresholds": {"accuracy": {"min": 0.5}}})
    smoke_only = [_run("a", {"accuracy": 0.9}, dataset="smoke")]
    outcome = run_gate(exp, smoke_only, None)
    assert not outcome.passed and outcome.chosen is None
    assert "primary dataset 'full' is not in this evaluation (datasets: smoke)" in outcome.failures[0]
    named = run_gate(exp, smoke_only, None, dataset="smoke")
    assert named.passed and named.primary_dataset == "smoke"
    assert any("ranked on dataset smoke as asked" in c for c in named.checks)


def test_a_nan_baseline_fails_the_regression_check() -> None:
    exp = _experiment({"regression": {"metrics": ["accuracy"]}})
    baseline = Selection("f", "3", "old", {}, {"accuracy": math.nan}, "run-1", "abc")
    outcome = run_gate(exp, [_run("a", {"accuracy": 0.9})], baseline)
    assert not outcome.passed
    assert "baseline old (flow version 3): accuracy = nan is not a finite number" in outcome.failures[0]


def test_a_tie_is_broken_by_cost_then_latency() -> None:
    exp = _experiment({})
    a = [1.0] * 16 + [0.0] * 4  # 0.80
    b = [1.0] * 15 + [0.0] * 5  # 0.75: one line apart, McNemar p = 1
    c = [1.0] * 15 + [0.0] * 5
    runs = [
        _run("a", {"accuracy": _mean(a), "cost_per_line": 0.004, "latency_p95_ms": 100.0}),
        _run("b", {"accuracy": _mean(b), "cost_per_line": 0.001, "latency_p95_ms": 900.0}),
        _run("c", {"accuracy": _mean(c), "cost_per_line": None}),  # unknown cost counts as worst
    ]
    lines = {"full": _lines("full", {"a": a, "b": b, "c": c})}
    outcome = run_gate(exp, runs, None, lines=lines)
    assert outcome.passed and outcome.chosen is not None and outcome.chosen.variant_id == "b"
    assert outcome.tie_break is not None
    assert "3 variants are not significantly different from the best on accuracy" in outcome.tie_break
    assert "chosen b by lower cost_per_line" in outcome.tie_break
    [vs_runner_up] = [c for c in outcome.comparisons if c.label == "chosen vs runner-up"]
    assert vs_runner_up.b == "a" and vs_runner_up.result.method.startswith("McNemar")
    # equal cost: latency decides
    runs[0].metrics["cost_per_line"] = 0.001
    again = run_gate(exp, runs, None, lines=lines)
    assert again.chosen is not None and again.chosen.variant_id == "a"
    assert again.tie_break is not None and "chosen a by lower latency_p95_ms" in again.tie_break
    # nothing known: the better value of the metric (a, 0.80)
    for run in runs:
        run.metrics.pop("cost_per_line", None)
        run.metrics.pop("latency_p95_ms", None)
    unknown = run_gate(exp, runs, None, lines=lines)
    assert unknown.chosen is not None and unknown.chosen.variant_id == "a"
    assert unknown.tie_break is not None and "by the higher accuracy" in unknown.tie_break


def test_an_immaterial_cost_difference_does_not_pick_a_worse_variant() -> None:
    """A new user's finding: 1.0 vs 0.67 over 12 lines is not significant (McNemar p = 0.125), and
    the worse variant was one token cheaper. A difference under TIE_MARGIN decides nothing."""
    exp = _experiment({})
    good = [1.0] * 12
    noisy = [1.0] * 8 + [0.0] * 4  # 0.67, 4 discordant lines: p = 0.125
    runs = [
        _run("good", {"accuracy": 1.0, "cost_per_line": 0.00048275, "latency_p95_ms": 284.0}),
        _run("noisy", {"accuracy": _mean(noisy), "cost_per_line": 0.00048262, "latency_p95_ms": 290.0}),
    ]
    outcome = run_gate(exp, runs, None, lines={"full": _lines("full", {"good": good, "noisy": noisy})})
    assert outcome.chosen is not None and outcome.chosen.variant_id == "good"
    assert outcome.tie_break is not None and "by the higher accuracy" in outcome.tie_break
    # a material saving (here 40 %) does decide a tie
    runs[1].metrics["cost_per_line"] = 0.00029
    cheaper = run_gate(exp, runs, None, lines={"full": _lines("full", {"good": good, "noisy": noisy})})
    assert cheaper.chosen is not None and cheaper.chosen.variant_id == "noisy"
    assert cheaper.tie_break is not None and "by lower cost_per_line (by at least 5%)" in cheaper.tie_break


def test_a_significantly_better_variant_wins_whatever_it_costs() -> None:
    exp = _experiment({})
    a = [1.0] * 20
    b = [1.0] * 6 + [0.0] * 14
    runs = [
        _run("a", {"accuracy": 1.0, "cost_per_line": 9.0}),
        _run("b", {"accuracy": 0.3, "cost_per_line": 0.0}),
    ]
    outcome = run_gate(exp, runs, None, lines={"full": _lines("full", {"a": a, "b": b})})
    assert outcome.chosen is not None and outcome.chosen.variant_id == "a" and outcome.tie_break is None
    assert outcome.comparisons[0].result.p_value == pytest.approx(2 / 2**14)


def test_threshold_on_the_interval_lower_bound() -> None:
    exp = _experiment({"thresholds": {"accuracy": {"min": 0.7, "min_lower_ci": 0.7}}})
    few = [1.0] * 8 + [0.0] * 2  # 0.8 on 10 lines: the interval reaches well below 0.7
    outcome = run_gate(
        exp, [_run("a", {"accuracy": 0.8}, lines=10)], None, lines={"full": _lines("full", {"a": few})}
    )
    assert not outcome.passed
    assert "lower bound is below min_lower_ci 0.7" in outcome.failures[1]
    many = [1.0] * 160 + [0.0] * 40  # 0.8 on 200 lines: the lower bound is about 0.745
    outcome = run_gate(
        exp, [_run("a", {"accuracy": 0.8}, lines=200)], None, lines={"full": _lines("full", {"a": many})}
    )
    assert outcome.passed, outcome.failures
    interval = outcome.intervals[("a", "full", "accuracy")]
    assert 0.7 < interval.low < 0.8 < interval.high
    no_lines = run_gate(exp, [_run("a", {"accuracy": 0.8})], None)
    assert not no_lines.passed and "no 95 % interval (no per-line scores)" in no_lines.failures[1]


def test_regression_means_significantly_worse_than_the_baseline() -> None:
    exp = _experiment({"regression": {"metrics": ["accuracy"], "tolerance": 0.0}})
    ours = [1.0] * 70 + [0.0] * 30  # 0.70 on 100 lines
    lines = {"full": _lines("full", {"a": ours})}
    run = _run("a", {"accuracy": 0.7}, lines=100)
    close = Selection("f", "3", "old", {}, {"accuracy": 0.72}, "run-1", "abc")
    outcome = run_gate(exp, [run], close, lines=lines)
    assert outcome.passed, outcome.failures  # 0.70 vs 0.72 on 100 lines is noise, not a regression
    [check] = [c for c in outcome.comparisons if c.label == "chosen vs baseline"]
    assert check.result.method == "exact binomial test against the recorded value"
    far = Selection("f", "3", "old", {}, {"accuracy": 0.9}, "run-1", "abc")
    outcome = run_gate(exp, [run], far, lines=lines)
    assert not outcome.passed
    assert (
        "regressed below the baseline old (flow version 3) value 0.9000: significantly worse"
        in outcome.failures[0]
    )
    # with the baseline's own lines on disk the test is paired on the same lines (McNemar)
    theirs = {"full": _lines("full", {"old": [1.0] * 90 + [0.0] * 10})}
    outcome = run_gate(exp, [run], far, lines=lines, baseline_lines=theirs)
    [paired] = [c for c in outcome.comparisons if c.label == "chosen vs baseline"]
    assert paired.result.method.startswith("McNemar") and paired.result.n == 100
    assert not outcome.passed
    # a tolerance larger than the drop lets a significant but small drop pass
    tolerant = _experiment({"regression": {"metrics": ["accuracy"], "tolerance": 0.25}})
    assert run_gate(tolerant, [run], far, lines=lines).passed


def _hit() -> Hit:
    return Hit(
        "exact",
        1.0,
        "flow.py",
        3,
        "Please delete my account",
        "full",
        "full.jsonl",
        1,
        "text",
        "Please delete my account",
    )


def test_contamination_fails_the_gate_unless_allowed_with_a_reason(tmp_path: Path) -> None:
    run = _run("a", {"accuracy": 0.9})
    outcome = run_gate(_experiment({}), [run], None, contamination=[_hit()])
    assert not outcome.passed and "contamination: 1 flow text(s) also appear" in outcome.failures[0]
    allowed = _experiment({"allow_contamination": True, "contamination_reason": "public FAQ, reviewed"})
    outcome = run_gate(allowed, [run], None, contamination=[_hit()])
    assert outcome.passed and any("allowed: public FAQ, reviewed" in c for c in outcome.checks)
    file = tmp_path / "experiment.yaml"
    file.write_text(
        "name: t\ndatasets: [{name: full, source: full.jsonl}]\ngates: {allow_contamination: true}\n"
    )
    with pytest.raises(ExperimentError, match="allow_contamination: true needs contamination_reason"):
        load_experiment(file)


# -- the CLI over a report folder --------------------------------------------------------------
def _case(tmp_path: Path, runs: list[dict[str, Any]], scope: dict[str, Any] | None) -> tuple[list[str], Path]:
    flow = tmp_path / "case" / "flow"
    flow.mkdir(parents=True)
    (flow / "flow.flex.yaml").write_text("entry: labeler:label\n")
    (flow / "labeler.py").write_text("def label(text: str) -> dict:\n    return {'label': text.upper()}\n")
    data = tmp_path / "case" / "data"
    data.mkdir()
    (data / "lines.jsonl").write_text('{"text": "a", "reference": "A"}\n')
    (tmp_path / "case" / "experiment.yaml").write_text(
        "name: nan_gate\nflow: flow\ndatasets:\n- name: lines\n  source: data/lines.jsonl\n"
        "- name: lines_smoke\n  source: data/lines.jsonl\n"
        "primary_metric: accuracy\ngates:\n  thresholds:\n    accuracy: {min: 0.9}\n"
    )
    report = tmp_path / "reports" / "case" / "20260101T000000Z-0a0b0c"
    report.mkdir(parents=True)
    metrics: dict[str, Any] = {
        "flow": "case",
        "experiment": "nan_gate",
        "experiment_run": report.name,
        "kind": "evaluation",
        "primary_dataset": "lines",
        "runs": runs,
    }
    if scope is not None:
        metrics["scope"] = scope
    # written the way json.dumps writes a NaN aggregate (what evaluate wrote before metrics were strict)
    (report / "metrics.json").write_text(json.dumps(metrics))
    args = [
        "gate",
        "--flow",
        "case",
        "--env",
        "local",
        "--experiment",
        str(tmp_path / "case" / "experiment.yaml"),
        "--report",
        str(report),
        "--reports-dir",
        str(tmp_path / "reports"),
        "--state-dir",
        str(tmp_path / "state"),
        "--no-start",
        "--no-progress",
    ]
    return args, tmp_path / "reports" / "case" / "latest" / "selection.json"


def _row(dataset: str, accuracy: float) -> dict[str, Any]:
    return {
        "variant_id": "default",
        "variants": {},
        "params": {},
        "dataset": dataset,
        "lines": 3,
        "failed_lines": 0,
        "metrics": {"line_success_rate": 1.0, "accuracy": accuracy},
        "evaluators": ["acc"],
    }


def test_gate_cli_fails_on_a_nan_metric_and_selects_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = {"datasets": ["lines", "lines_smoke"], "partial": False, "why": ""}
    args, selection = _case(tmp_path, [_row("lines", math.nan), _row("lines_smoke", 1.0)], full)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "variant default: dataset lines: accuracy = nan is not a finite number" in err
    assert not selection.exists()
    assert not list(selection.parent.parent.glob("*/selection.json"))
    [verdict] = (tmp_path / "reports" / "case").glob("*/gate-*.json")
    json.loads(verdict.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))


def test_only_a_complete_evaluation_changes_the_release_selection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [_row("lines", 1.0), _row("lines_smoke", 1.0)]
    partial = {"datasets": ["lines"], "partial": True, "why": "datasets lines of lines, lines_smoke"}
    args, selection = _case(tmp_path / "p", rows[:1], partial)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "selection NOT recorded for release: partial evaluation (datasets lines of lines, lines_smoke)" in out
    )
    assert not selection.exists()
    args, selection = _case(tmp_path / "old", rows, None)  # a report that does not say what it covered
    assert main(args) == 0 and not selection.exists()
    complete = {"datasets": ["lines", "lines_smoke"], "partial": False, "why": ""}
    args, selection = _case(tmp_path / "c", rows, complete)
    assert main(args) == 0
    assert json.loads(selection.read_text())["variant_id"] == "default"
    # the smoke dataset alone: the gate does not fall back to it
    args, selection = _case(
        tmp_path / "s", rows[1:], {"datasets": ["lines_smoke"], "partial": True, "why": "x"}
    )
    assert main(args) == 1
    assert (
        "primary dataset 'lines' is not in this evaluation (datasets: lines_smoke)" in capsys.readouterr().err
    )
    assert main([*args, "--dataset", "lines_smoke"]) == 0  # named explicitly: ranked on it, not recorded
    assert not selection.exists()


def test_a_library_or_notebook_gate_never_changes_the_release_selection(tmp_path: Path) -> None:
    from release.experiment import pipeline

    complete = {"datasets": ["lines", "lines_smoke"], "partial": False, "why": ""}
    args, selection = _case(tmp_path, [_row("lines", 1.0), _row("lines_smoke", 1.0)], complete)
    options = pipeline.Options(
        flow="case",
        env="local",
        experiment_file=Path(args[args.index("--experiment") + 1]),
        reports_dir=tmp_path / "reports",
        state_dir=tmp_path / "state",
        start_local=False,
    )  # what the notebook builds: record_selection is off by default
    outcome, report = pipeline.gate(options, Path(args[args.index("--report") + 1]))
    assert outcome.passed and outcome.recorded is None and not selection.exists()
    assert outcome.not_recorded is not None and "notebook" in outcome.not_recorded
    assert json.loads((report / "selection.json").read_text())["variant_id"] == "default"
