"""Evaluation: every evaluator over the runs of the dataset it references, metrics per run.

An evaluator dataset line pairs with the run line of the same number; run lines that failed are
left out of the evaluation and counted (``failed_lines``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from release.engine.base import Engine, FlowVariant
from release.experiment.plan import Job, Plan, map_inputs
from release.experiment.runner import JobResult, Runner
from release.registry.hashing import content_hash, hash_text


@dataclass
class RunMetrics:
    """The metrics of one run (variant x dataset) from every evaluator paired with it."""

    variant_id: str
    variant: FlowVariant
    dataset: str
    lines: int
    failed_lines: int
    metrics: dict[str, float] = field(default_factory=dict)
    evaluators: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "variant_id": self.variant_id,
            "variants": self.variant.variants,
            "params": self.variant.params,
            "dataset": self.dataset,
            "lines": self.lines,
            "failed_lines": self.failed_lines,
            "metrics": self.metrics,
            "evaluators": self.evaluators,
        }


def eval_jobs(plan: Plan, runs: list[JobResult], engine: Engine, pages_url: str | None) -> list[Job]:
    jobs: list[Job] = []
    experiment = plan.experiment
    for e_index, evaluator in enumerate(experiment.evaluators):
        flow_dir = (experiment.base_dir / evaluator.flow).resolve()
        flow_hash = content_hash(flow_dir)
        for d_index, dataset in enumerate(evaluator.datasets):
            data = plan.eval_data.get((e_index, d_index))
            if data is None:
                continue  # its reference dataset did not run (the plan read and checked the others)
            data_hash = content_hash(experiment.source_path(dataset.source))
            for run in runs:
                if run.job.dataset != dataset.reference:
                    continue
                ok = [line for line in run.lines if line.error is None]
                run_rows = plan.rows[run.job.dataset]
                # ${run.inputs.x}: the run's data line (prompt flow's definition), not its mapped inputs
                inputs = [
                    map_inputs(data.mappings, data.rows[line.index], line.outputs, run_rows[line.index])
                    for line in ok
                ]
                key = hash_text(
                    "eval",
                    flow_hash,
                    data_hash,
                    run.job.key,
                    json.dumps(data.mappings, sort_keys=True, default=str),
                    engine.name,
                )
                jobs.append(
                    Job(
                        "eval",
                        f"{evaluator.name}/{run.job.name}",
                        flow_dir,
                        FlowVariant(),
                        run.job.dataset,
                        inputs,
                        [line.index for line in ok],
                        key,
                        reference=run.job.name,
                        evaluator=evaluator.name,
                    )
                )
    return jobs


def evaluate(
    plan: Plan, runs: list[JobResult], runner: Runner, engine: Engine, pages_url: str | None
) -> tuple[list[RunMetrics], list[JobResult]]:
    jobs = eval_jobs(plan, runs, engine, pages_url)
    results = runner.run(jobs, label="evaluation") if jobs else []
    by_run: dict[str, RunMetrics] = {}
    for run in runs:
        lines = len(run.lines)
        by_run[run.job.name] = RunMetrics(
            run.job.variant.id,
            run.job.variant,
            run.job.dataset,
            lines,
            len(run.failed),
            {"line_success_rate": round((lines - len(run.failed)) / lines, 4) if lines else 0.0},
        )
    for result in results:
        result.metrics = runner.aggregate(result)
        target = by_run[str(result.job.reference)]
        target.metrics.update(result.metrics)
        target.evaluators.append(str(result.job.evaluator))
    return list(by_run.values()), results
