"""The quality gate: thresholds per variant, the best variant by the primary metric, no regression.

1. A variant passes when, on every evaluated dataset, every threshold holds and no line failed.
2. Of the passing variants, the best by ``primary_metric`` on ``primary_dataset`` is chosen
   (higher is better; ties keep the experiment's order).
3. The chosen variant must not fall below the registered baseline by more than ``tolerance``
   for each ``regression.metrics`` metric.
Any failure names metric, value, threshold and variant; the CLI exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from release.experiment.evaluate import RunMetrics
from release.experiment.spec import Experiment, ExperimentError
from release.registry.base import Selection


@dataclass
class GateOutcome:
    passed: bool
    primary_metric: str
    primary_dataset: str
    chosen: RunMetrics | None = None
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # every check made, for the report
    rejected: list[str] = field(default_factory=list)  # why other variants were not eligible


def primary_metric(experiment: Experiment) -> str:
    if experiment.primary_metric:
        return experiment.primary_metric
    if experiment.gates.thresholds:
        return next(iter(experiment.gates.thresholds))
    raise ExperimentError(
        f"{experiment.file}: primary_metric: not set; name the metric that picks the best variant"
    )


def run_gate(
    experiment: Experiment, results: list[RunMetrics], primary_dataset: str, baseline: Selection | None
) -> GateOutcome:
    metric = primary_metric(experiment)
    outcome = GateOutcome(False, metric, primary_dataset)
    produced = {name for r in results for name in (*r.metrics, *r.cost_latency)}
    for name in [metric, *experiment.gates.thresholds]:
        if name not in produced:
            raise ExperimentError(
                f"{experiment.file}: gates: metric {name!r} is produced by no evaluator; "
                f"metrics: {', '.join(sorted(produced)) or 'none'}"
            )
    variants: dict[str, list[RunMetrics]] = {}
    for r in results:
        variants.setdefault(r.variant_id, []).append(r)
    passing: list[RunMetrics] = []
    for variant_id, runs in variants.items():
        problems: list[str] = []
        for run in runs:
            if run.failed_lines:
                problems.append(
                    f"variant {variant_id}: dataset {run.dataset}: "
                    f"{run.failed_lines} of {run.lines} lines failed"
                )
            for name, bound in experiment.gates.thresholds.items():
                value = run.value(name)
                if value is None and name in run.cost_latency:
                    problems.append(
                        f"variant {variant_id}: dataset {run.dataset}: {name} is n/a (no usage or no price "
                        "for a model the run called); a threshold needs a number: add the model to "
                        "pricing.models in the environment config"
                    )
                    continue
                if value is None:
                    continue
                if bound.min is not None and value < bound.min:
                    problems.append(
                        f"variant {variant_id}: dataset {run.dataset}: {name} = {value:.4f} is below the "
                        f"threshold min {bound.min}"
                    )
                elif bound.max is not None and value > bound.max:
                    problems.append(
                        f"variant {variant_id}: dataset {run.dataset}: {name} = {value:.4f} is above the "
                        f"threshold max {bound.max}"
                    )
                else:
                    outcome.checks.append(
                        f"variant {variant_id}: dataset {run.dataset}: {name} = {value:.4f} ok"
                    )
        primary = next((r for r in runs if r.dataset == primary_dataset), None)
        if problems:
            outcome.failures.extend(problems)
        elif primary is not None and metric in primary.metrics:
            passing.append(primary)
    if not passing:
        outcome.failures.insert(0, f"no variant passed the gate ({len(variants)} evaluated)")
        return outcome
    chosen = max(passing, key=lambda r: r.metrics[metric])  # max keeps the first of equal values
    outcome.chosen = chosen
    outcome.rejected, outcome.failures = outcome.failures, []  # others failing is fine once one passes
    regression = experiment.gates.regression
    if regression and baseline is not None:
        for name in regression.metrics:
            base = baseline.metrics.get(name)
            value = chosen.metrics.get(name)
            if base is None or value is None:
                outcome.checks.append(f"regression {name}: no baseline value; skipped")
                continue
            floor = base - regression.tolerance
            if value < floor:
                outcome.failures.append(
                    f"variant {chosen.variant_id}: {name} = {value:.4f} regressed below the baseline "
                    f"{base:.4f} (flow version {baseline.flow_version}) "
                    f"minus tolerance {regression.tolerance} "
                    f"= threshold {floor:.4f}"
                )
            else:
                outcome.checks.append(f"regression {name}: {value:.4f} >= {floor:.4f} (baseline {base:.4f})")
    outcome.passed = not outcome.failures
    return outcome
