"""The quality gate: decides only on numbers, on the data it names, with their uncertainty.

In order; any failure names variant, dataset, metric, value and limit, selects nothing and makes
the CLI exit 1:

1. **The data.** The primary dataset (``primary_dataset``, else the experiment's first dataset)
   must be in the evaluation: the gate never falls back to another dataset. Every gated metric
   (the primary metric, each threshold's metric, each regression metric) must be a finite number
   in every run it applies to: NaN, infinity, a missing value or a non-number fails the gate.
2. **Contamination.** Flow text found in the evaluation datasets
   (:mod:`release.experiment.contamination`) fails the gate unless ``gates.allow_contamination``
   is true with a ``contamination_reason``.
3. **Thresholds.** A variant is eligible when, on every evaluated dataset, no line failed and every
   threshold holds: ``min``/``max`` on the value, ``min_lower_ci``/``max_upper_ci`` on the bounds of
   its 95 % bootstrap interval over lines (:mod:`release.experiment.stats`).
4. **The choice.** The eligible variants are ranked by the primary metric on the primary dataset
   (higher is better). Variants not significantly different from the best (paired test on the same
   lines, two-sided, ``gates.alpha``) tie; the tie is broken by lower ``cost_per_line``, then lower
   ``latency_p95_ms`` (unknown counts as worst), then the experiment's order.
5. **Regression.** For each ``regression.metrics`` metric, the chosen variant fails when it is
   significantly worse than the registered baseline (paired test on the same lines when the
   baseline's lines are known, else a one-sample test against the baseline's recorded value) and
   the drop is larger than ``tolerance``. Without per-line scores, the raw drop is compared with
   ``tolerance``. A baseline value that is not a finite number fails the gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.experiment.contamination import Hit
from release.experiment.evaluate import RunMetrics
from release.experiment.lines import DatasetLines, LineScores, metric_intervals, metric_scores
from release.experiment.spec import Experiment, ExperimentError
from release.experiment.stats import (
    Comparison,
    Interval,
    finite,
    one_sample_test,
    paired_test,
)
from release.registry.base import Selection

COST = "cost_per_line"
LATENCY = "latency_p95_ms"
OPERATIONAL_PREFIXES = ("cost_", "latency_", "tokens_", "prompt_tokens", "completion_tokens", "total_tokens")


def is_quality_metric(name: str) -> bool:
    """Quality metrics get intervals and tests; cost, latency and token counts are operational."""
    return not name.startswith(OPERATIONAL_PREFIXES)


def metric_value(run: RunMetrics, name: str) -> Any:
    """The raw value of metric ``name`` of ``run`` (anything; None when absent): the one lookup.

    Quality metrics come first, then the cost and latency figures (``release.experiment.cost``;
    None there means "n/a": no usage reported or no price for a model the run called)."""
    if name in run.metrics:
        return run.metrics[name]
    return run.cost_latency.get(name)


def describe_value(value: Any, present: bool = False) -> str:
    """How a metric value reads in a message; ``present``: the key exists (None is then JSON null)."""
    if value is None:
        return "null (not a number)" if present else "missing"
    number = finite(value)
    if number is not None:
        return f"{number:.4f}"
    if isinstance(value, float):
        return f"{value} is not a finite number"
    return f"{value!r} is not a number"


@dataclass
class NamedComparison:
    """A paired comparison the report shows: ``a`` against ``b`` on one metric and dataset."""

    label: str  # "chosen vs runner-up" | "chosen vs baseline" | "best vs ..."
    metric: str
    dataset: str
    a: str
    b: str
    result: Comparison

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": self.metric,
            "dataset": self.dataset,
            "a": self.a,
            "b": self.b,
            **self.result.to_json(),
        }


@dataclass
class GateOutcome:
    passed: bool
    primary_metric: str
    primary_dataset: str
    chosen: RunMetrics | None = None
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # every check made, for the report
    rejected: list[str] = field(default_factory=list)  # why other variants were not eligible
    alpha: float = 0.05
    intervals: dict[tuple[str, str, str], Interval] = field(
        default_factory=dict
    )  # (variant, dataset, metric)
    comparisons: list[NamedComparison] = field(default_factory=list)
    tie_break: str | None = None
    contamination: list[Hit] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)  # metrics the gate decides on
    recorded: Path | None = None  # reports/<flow>/latest/selection.json, when written
    not_recorded: str | None = None  # why a passing gate did not write it

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "primary_metric": self.primary_metric,
            "primary_dataset": self.primary_dataset,
            "chosen": None if self.chosen is None else self.chosen.variant_id,
            "failures": self.failures,
            "rejected": self.rejected,
            "checks": self.checks,
            "alpha": self.alpha,
            "gated": self.gated,
            "tie_break": self.tie_break,
            "comparisons": [c.to_json() for c in self.comparisons],
            "contamination": [h.to_json() for h in self.contamination],
        }


def primary_metric(experiment: Experiment) -> str:
    if experiment.primary_metric:
        return experiment.primary_metric
    if experiment.gates.thresholds:
        return next(iter(experiment.gates.thresholds))
    raise ExperimentError(
        f"{experiment.file}: primary_metric: not set; name the metric that picks the best variant"
    )


def primary_dataset(experiment: Experiment) -> str:
    """The dataset the gate ranks on: ``primary_dataset``, else the experiment's first dataset."""
    return experiment.primary_dataset or experiment.datasets[0].name


class _Scores:
    """Per-line scores and intervals, computed once per (variant, dataset, metric)."""

    def __init__(self, lines: dict[str, DatasetLines] | None) -> None:
        self.lines = lines or {}
        self._cache: dict[tuple[str, str, str], LineScores | None] = {}

    def get(self, run: RunMetrics, metric: str) -> LineScores | None:
        key = (run.variant_id, run.dataset, metric)
        if key not in self._cache:
            data = self.lines.get(run.dataset)
            self._cache[key] = (
                None
                if data is None
                else metric_scores(data, run.variant_id, metric, finite(metric_value(run, metric)))
            )
        return self._cache[key]


def _paired(a: LineScores | None, b: LineScores | None) -> Comparison | None:
    if a is None or b is None:
        return None
    common = sorted(set(a.scores) & set(b.scores))
    if not common:
        return None
    return paired_test([a.scores[i] for i in common], [b.scores[i] for i in common])


def run_gate(
    experiment: Experiment,
    results: list[RunMetrics],
    baseline: Selection | None,
    *,
    lines: dict[str, DatasetLines] | None = None,
    baseline_lines: dict[str, DatasetLines] | None = None,
    contamination: list[Hit] | None = None,
    dataset: str | None = None,
) -> GateOutcome:
    """Gate ``results`` (one per variant x dataset); ``lines`` are this evaluation's per-line
    results, ``baseline_lines`` the baseline's evaluation lines when still on disk (paired tests).
    ``dataset``: rank on this dataset instead of the primary one (named by the caller, e.g. a
    pull request's gate on its small dataset; said in the checks)."""
    gates = experiment.gates
    metric = primary_metric(experiment)
    primary = dataset or primary_dataset(experiment)
    outcome = GateOutcome(False, metric, primary, alpha=gates.alpha, contamination=list(contamination or []))
    scores = _Scores(lines)
    produced = {name for r in results for name in (*r.metrics, *r.cost_latency)}
    regression_metrics = gates.regression.metrics if gates.regression else []
    for name in dict.fromkeys([metric, *gates.thresholds, *regression_metrics]):
        if name not in produced:
            raise ExperimentError(
                f"{experiment.file}: gates: metric {name!r} is produced by no evaluator; "
                f"metrics: {', '.join(sorted(produced)) or 'none'}"
            )
    outcome.gated = list(dict.fromkeys([metric, *gates.thresholds, *regression_metrics]))
    if dataset and dataset != primary_dataset(experiment):
        outcome.checks.append(
            f"ranked on dataset {dataset} as asked (the primary dataset is {primary_dataset(experiment)})"
        )
    # 1. the data
    datasets = list(dict.fromkeys(r.dataset for r in results))
    if primary not in datasets:
        outcome.failures.append(
            f"primary dataset {primary!r} is not in this evaluation "
            f"(datasets: {', '.join(datasets) or 'none'}): "
            f"the gate ranks variants on {primary!r} only; evaluate it (no --dataset, or --dataset {primary})"
        )
        return outcome
    for run in results:
        needed = [*gates.thresholds]
        if run.dataset == primary:
            needed = [metric, *needed, *regression_metrics]
        for name in dict.fromkeys(needed):
            value = metric_value(run, name)
            if finite(value) is None and name in run.cost_latency:
                outcome.failures.append(
                    f"variant {run.variant_id}: dataset {run.dataset}: {name} is n/a (no usage reported, "
                    "or no price for a model the run called); a threshold needs a number: add the model "
                    "to pricing.models in the environment config"
                )
            elif finite(value) is None:
                outcome.failures.append(
                    f"variant {run.variant_id}: dataset {run.dataset}: "
                    f"{name} = {describe_value(value, name in run.metrics or name in run.cost_latency)}: "
                    "the gate decides only on finite numbers; fix the evaluator or the data"
                )
    if outcome.failures:
        return outcome
    # 2. contamination
    if outcome.contamination:
        if gates.allow_contamination:
            outcome.checks.append(
                f"contamination: {len(outcome.contamination)} hit(s) allowed: {gates.contamination_reason}"
            )
        else:
            outcome.failures.append(
                f"contamination: {len(outcome.contamination)} flow text(s) also appear in the evaluation "
                f"datasets (first: {outcome.contamination[0].describe()}); remove them from the flow, or set "
                "gates.allow_contamination: true with gates.contamination_reason"
            )
            return outcome
    # 3. thresholds
    variants: dict[str, list[RunMetrics]] = {}
    for r in results:
        variants.setdefault(r.variant_id, []).append(r)
    outcome.intervals = metric_intervals(results, lines or {})
    eligible: list[RunMetrics] = []
    for variant_id, runs in variants.items():
        problems: list[str] = []
        for run in runs:
            where = f"variant {variant_id}: dataset {run.dataset}"
            if run.failed_lines:
                problems.append(f"{where}: {run.failed_lines} of {run.lines} lines failed")
            for name, bound in gates.thresholds.items():
                value = float(metric_value(run, name))
                problems += _check_bound(where, name, value, bound, outcome, run, scores)
        ranked_on = next((r for r in runs if r.dataset == primary), None)
        if ranked_on is None:
            problems.append(f"variant {variant_id}: did not run on dataset {primary}")
        if problems:
            outcome.failures.extend(problems)
        elif ranked_on is not None:
            eligible.append(ranked_on)
    if not eligible:
        outcome.failures.insert(0, f"no variant passed the gate ({len(variants)} evaluated)")
        return outcome
    outcome.rejected, outcome.failures = outcome.failures, []  # others failing is fine once one passes
    # 4. the choice
    chosen = _choose(eligible, metric, scores, outcome)
    outcome.chosen = chosen
    # 5. regression
    if gates.regression and baseline is not None:
        _regression(experiment, chosen, baseline, scores, baseline_lines, outcome)
    outcome.passed = not outcome.failures
    return outcome


def _check_bound(
    where: str,
    name: str,
    value: float,
    bound: Any,
    outcome: GateOutcome,
    run: RunMetrics,
    scores: _Scores,
) -> list[str]:
    problems = []
    if bound.min is not None and value < bound.min:
        problems.append(f"{where}: {name} = {value:.4f} is below the threshold min {bound.min}")
    if bound.max is not None and value > bound.max:
        problems.append(f"{where}: {name} = {value:.4f} is above the threshold max {bound.max}")
    if bound.min_lower_ci is not None or bound.max_upper_ci is not None:
        interval = outcome.intervals.get((run.variant_id, run.dataset, name))
        if interval is None:
            source = scores.get(run, name)
            why = "fewer than 2 scored lines" if source is not None else "no per-line scores"
            problems.append(
                f"{where}: {name}: no 95 % interval ({why}) for the threshold on its bounds; "
                "the evaluator must output the metric per line (see docs/experiments.md)"
            )
        else:
            ci = f"95 % CI [{interval.low:.4f}, {interval.high:.4f}]"
            if bound.min_lower_ci is not None and interval.low < bound.min_lower_ci:
                problems.append(
                    f"{where}: {name} {ci}: lower bound is below min_lower_ci {bound.min_lower_ci}"
                )
            if bound.max_upper_ci is not None and interval.high > bound.max_upper_ci:
                problems.append(
                    f"{where}: {name} {ci}: upper bound is above max_upper_ci {bound.max_upper_ci}"
                )
    if not problems:
        outcome.checks.append(f"{where}: {name} = {value:.4f} ok")
    return problems


# A cost or latency difference breaks a tie only when it is material: at least this share of the
# lower value. Smaller ones (a token, a few ms of noise) leave the choice to the metric itself.
TIE_MARGIN = 0.05


def _within_margin(runs: list[RunMetrics], name: str) -> list[RunMetrics]:
    """The runs whose ``name`` (cost or latency; lower is better) is within :data:`TIE_MARGIN` of
    the lowest; all of them when no run has a number for it (unknown counts as worst)."""
    values = [_sort_key(r, name) for r in runs]
    lowest = min(values)
    if math.isinf(lowest):
        return list(runs)
    return [r for r, v in zip(runs, values, strict=True) if v <= lowest * (1 + TIE_MARGIN) + 1e-12]


def _sort_key(run: RunMetrics, name: str) -> float:
    value = finite(metric_value(run, name))
    return math.inf if value is None else value


def _choose(eligible: list[RunMetrics], metric: str, scores: _Scores, outcome: GateOutcome) -> RunMetrics:
    order = {r.variant_id: i for i, r in enumerate(eligible)}
    ranked = sorted(eligible, key=lambda r: (-float(metric_value(r, metric)), order[r.variant_id]))
    best = ranked[0]
    best_scores = scores.get(best, metric)
    tied = [best]
    notes: list[str] = []
    for other in ranked[1:]:
        comparison = _paired(best_scores, scores.get(other, metric))
        if comparison is None:
            same = float(metric_value(other, metric)) == float(metric_value(best, metric))
            if same:
                tied.append(other)
                notes.append(f"{other.variant_id}: equal value, no per-line scores to test")
            continue
        outcome.comparisons.append(
            NamedComparison(
                "best vs " + other.variant_id,
                metric,
                best.dataset,
                best.variant_id,
                other.variant_id,
                comparison,
            )
        )
        if not comparison.significant(outcome.alpha):
            tied.append(other)
            notes.append(f"{other.variant_id}: p = {comparison.p_value:.3g} ({comparison.method})")
    chosen = best
    if len(tied) > 1:
        remaining = list(tied)
        how = ""
        for name in (COST, LATENCY):
            kept = _within_margin(remaining, name)
            # a run with a number that is materially higher lost on this figure (unknown ones
            # count as worst, but do not make the figure the reason)
            beaten = [r for r in remaining if r not in kept and finite(metric_value(r, name)) is not None]
            if beaten and not how:
                how = f"lower {name} (by at least {TIE_MARGIN:.0%})"
            remaining = kept
        # what is left differs by less than the margin: the better value of the metric, then order
        chosen = min(remaining, key=lambda r: ranked.index(r))
        if not how:
            how = (
                f"the higher {metric}" if chosen is best else "the experiment's order"
            ) + f" ({COST} and {LATENCY} within {TIE_MARGIN:.0%} of each other, or unknown)"
        costs = ", ".join(
            f"{r.variant_id}: {COST} {describe_value(metric_value(r, COST))}, "
            f"{LATENCY} {describe_value(metric_value(r, LATENCY))}"
            for r in tied
        )
        outcome.tie_break = (
            f"{len(tied)} variants are not significantly different from the best on {metric} "
            f"(alpha {outcome.alpha}; {'; '.join(notes)}); chosen {chosen.variant_id} by {how} ({costs})"
        )
    runner_up = next((r for r in ranked if r is not chosen), None)
    if runner_up is not None:
        comparison = _paired(scores.get(chosen, metric), scores.get(runner_up, metric))
        if comparison is not None:
            outcome.comparisons = [  # the same pair once, under its plainer name
                c for c in outcome.comparisons if (c.a, c.b) != (chosen.variant_id, runner_up.variant_id)
            ]
            outcome.comparisons.insert(
                0,
                NamedComparison(
                    "chosen vs runner-up",
                    metric,
                    chosen.dataset,
                    chosen.variant_id,
                    runner_up.variant_id,
                    comparison,
                ),
            )
    return chosen


def _regression(
    experiment: Experiment,
    chosen: RunMetrics,
    baseline: Selection,
    scores: _Scores,
    baseline_lines: dict[str, DatasetLines] | None,
    outcome: GateOutcome,
) -> None:
    regression = experiment.gates.regression
    assert regression is not None
    name_of = f"baseline {baseline.variant_id} (flow version {baseline.flow_version})"
    base_data = (baseline_lines or {}).get(chosen.dataset)
    for name in regression.metrics:
        raw = baseline.metrics.get(name)
        base = finite(raw)
        if base is None:
            outcome.failures.append(
                f"regression {name}: {name_of}: {name} = {describe_value(raw)}; the gate compares only "
                f"finite numbers: remove {name} from gates.regression.metrics for this release, "
                "or register a baseline that has it"
            )
            continue
        value = float(metric_value(chosen, name))
        ours = scores.get(chosen, name)
        comparison: Comparison | None = None
        if ours is not None and base_data is not None and baseline.variant_id in base_data.outputs:
            theirs = metric_scores(base_data, baseline.variant_id, name, base)
            comparison = _paired(ours, theirs)
        if comparison is None and ours is not None:
            comparison = one_sample_test(list(ours.scores.values()), base)
        if comparison is None:
            floor = base - regression.tolerance
            if value < floor:
                outcome.failures.append(
                    f"variant {chosen.variant_id}: {name} = {value:.4f} regressed below the {name_of} value "
                    f"{base:.4f} minus tolerance {regression.tolerance} = threshold {floor:.4f} "
                    "(no per-line scores: raw difference)"
                )
            else:
                outcome.checks.append(
                    f"regression {name}: {value:.4f} >= {floor:.4f} ({name_of} {base:.4f}; raw)"
                )
            continue
        outcome.comparisons.append(
            NamedComparison(
                "chosen vs baseline", name, chosen.dataset, chosen.variant_id, name_of, comparison
            )
        )
        drop = base - value
        significant = comparison.significant(outcome.alpha) and (comparison.difference or 0.0) < 0
        if significant and drop > regression.tolerance:
            outcome.failures.append(
                f"variant {chosen.variant_id}: {name} = {value:.4f} regressed below the {name_of} value "
                f"{base:.4f}: significantly worse (p = {comparison.p_value:.3g} < alpha {outcome.alpha}, "
                f"{comparison.method}) by {drop:.4f}, more than tolerance {regression.tolerance}"
            )
        else:
            outcome.checks.append(
                f"regression {name}: {value:.4f} vs {name_of} {base:.4f}: p = {comparison.p_value:.3g} "
                f"({comparison.method}); not a significant drop beyond tolerance {regression.tolerance}"
            )
