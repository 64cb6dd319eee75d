"""Evaluation: every evaluator over the runs of the dataset it references, metrics per run.

An evaluator dataset line pairs with the run line of the same number; run lines that failed are
left out of the evaluation and counted (``failed_lines``). Each run also gets its cost and latency
(:mod:`release.experiment.cost`) and the node inputs its variant really set (``effective_inputs``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.config import Pricing
from release.engine.base import Engine, FlowVariant
from release.errors import UserError
from release.experiment import builtin_evaluators
from release.experiment.cost import COST_LATENCY_KEYS, cost_and_latency
from release.experiment.plan import Job, Plan, map_inputs
from release.experiment.runner import JobResult, Runner
from release.experiment.spec import Evaluator
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
    # tokens_*, cost_*, latency_*_ms (release.experiment.cost); None: n/a
    cost_latency: dict[str, float | None] = field(default_factory=dict)
    currency: str | None = None
    effective_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # {node: {param: value}}

    def value(self, name: str) -> float | None:
        """A quality metric or a cost/latency figure by name (None: missing or n/a)."""
        if name in self.metrics:
            return self.metrics[name]
        return self.cost_latency.get(name)

    def to_json(self) -> dict[str, Any]:
        """The run's entry in metrics.json: cost and latency sit next to the quality metrics."""
        return {
            "variant_id": self.variant_id,
            "variants": self.variant.variants,
            "params": self.variant.params,
            "dataset": self.dataset,
            "lines": self.lines,
            "failed_lines": self.failed_lines,
            "metrics": {**self.metrics, **self.cost_latency},
            "currency": self.currency,
            "effective_inputs": self.effective_inputs,
            "evaluators": self.evaluators,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMetrics:
        """Read back a metrics.json entry written by :meth:`to_json`."""
        values = dict(data.get("metrics") or {})
        return cls(
            data["variant_id"],
            FlowVariant(data.get("variants") or {}, data.get("params") or {}),
            data["dataset"],
            data["lines"],
            data["failed_lines"],
            {k: v for k, v in values.items() if k not in COST_LATENCY_KEYS},
            list(data.get("evaluators") or []),
            {k: values[k] for k in COST_LATENCY_KEYS if k in values},
            data.get("currency"),
            dict(data.get("effective_inputs") or {}),
        )


def run_metrics(
    run: JobResult,
    pricing: Pricing | None = None,
    engine: Engine | None = None,
    overrides: dict[str, str] | None = None,
) -> RunMetrics:
    """A run's line counts, success rate, cost and latency, and effective node inputs (no evaluators yet)."""
    pricing = pricing or Pricing()
    lines = len(run.lines)
    ok = [line for line in run.lines if line.error is None]
    effective = engine.effective_inputs(run.job.flow_dir, run.job.variant, overrides) if engine else {}
    return RunMetrics(
        run.job.variant.id,
        run.job.variant,
        run.job.dataset,
        lines,
        lines - len(ok),
        {"line_success_rate": round(len(ok) / lines, 4) if lines else 0.0},
        cost_latency=cost_and_latency([(line.usage, line.wall_ms) for line in ok], pricing),
        currency=pricing.currency,
        effective_inputs=effective,
    )


def eval_jobs(plan: Plan, runs: list[JobResult], engine: Engine, pages_url: str | None) -> list[Job]:
    jobs: list[Job] = []
    experiment = plan.experiment
    for e_index, evaluator in enumerate(experiment.evaluators):
        if evaluator.builtin is not None:  # azure-ai-evaluation: keyed by evaluator, version and arguments
            flow_dir = builtin_dir(evaluator)
            flow_hash = hash_text(
                "builtin",
                str(evaluator.builtin),
                builtin_evaluators.package_version(),
                json.dumps(evaluator.init, sort_keys=True, default=str),
                evaluator.judge.model_dump_json() if evaluator.judge else "",
            )
        else:
            flow_dir = (experiment.base_dir / str(evaluator.flow)).resolve()
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


def builtin_dir(evaluator: Evaluator) -> Path:
    """The name a built-in evaluator's jobs and session go by (not a folder)."""
    return Path(f"builtin:{evaluator.name}")


def _open_builtins(plan: Plan, runner: Runner) -> None:
    """Register a session opener per built-in evaluator (opened, importing the package, on first use)."""
    for evaluator in plan.experiment.evaluators:
        if evaluator.builtin is None:
            continue
        spec = builtin_evaluators.lookup(evaluator.builtin, evaluator.name)
        judge_config = None
        if evaluator.judge is not None:
            name = runner.overrides.get(evaluator.judge.connection, evaluator.judge.connection)
            connection = next((c for c in runner.connections if c.name == name), None)
            if connection is None:
                raise UserError(f"evaluator {evaluator.name}: judge connection {name!r} was not resolved")
            judge_config = builtin_evaluators.model_config(connection, evaluator.judge.model)

        opener = functools.partial(
            builtin_evaluators.BuiltinEvaluatorSession, spec, dict(evaluator.init), judge_config
        )
        runner.add_opener(builtin_dir(evaluator), FlowVariant(), opener)


def evaluate(
    plan: Plan,
    runs: list[JobResult],
    runner: Runner,
    engine: Engine,
    pages_url: str | None,
    pricing: Pricing | None = None,
) -> tuple[list[RunMetrics], list[JobResult]]:
    jobs = eval_jobs(plan, runs, engine, pages_url)
    _open_builtins(plan, runner)
    results = runner.run(jobs, label="evaluation") if jobs else []
    by_run: dict[str, RunMetrics] = {}
    for run in runs:
        by_run[run.job.name] = run_metrics(run, pricing, engine, runner.overrides)
    for result in results:
        result.metrics = runner.aggregate(result)
        target = by_run[str(result.job.reference)]
        target.metrics.update(result.metrics)
        target.evaluators.append(str(result.job.evaluator))
    return list(by_run.values()), results
