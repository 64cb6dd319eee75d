"""Everything an experiment will run, built and validated before the first line runs.

Checks: flow and evaluator folders, dataset files, mappings (flow inputs and dataset columns,
``${run.outputs.x}`` against the flow's outputs), evaluator references, line counts, gate metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.engine.base import Engine, FlowInfo, FlowVariant
from release.experiment.expand import expand
from release.experiment.spec import MAPPING_RE, Evaluator, Experiment, ExperimentError
from release.registry.hashing import content_hash, hash_text

PAGES_PLACEHOLDER = "{pages_url}"


@dataclass
class Job:
    """One flow (or evaluator) over one dataset with one variant: the unit the runner executes."""

    kind: str  # "run" | "eval"
    name: str
    flow_dir: Path
    variant: FlowVariant
    dataset: str
    inputs: list[dict[str, Any]]
    indices: list[int]  # dataset line numbers of ``inputs``
    key: str  # content hash of flow, data and parameters: the cache key
    reference: str | None = None  # eval: the run job's name
    evaluator: str | None = None


@dataclass
class Plan:
    experiment: Experiment
    flow_name: str
    flow_dir: Path
    info: FlowInfo
    flow_hash: str
    variants: list[FlowVariant]
    runs: list[Job]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # dataset -> rows
    data_hashes: dict[str, str] = field(default_factory=dict)
    primary_dataset: str = ""


def read_rows(path: Path, shown: str, pages_url: str | None) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ExperimentError(f"{shown}: dataset file {path} does not exist; fix 'source' or add the file")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExperimentError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ExperimentError(f"{path}:{number}: each line must be a JSON object")
        if pages_url is not None:
            row = {
                k: v.replace(PAGES_PLACEHOLDER, pages_url) if isinstance(v, str) else v
                for k, v in row.items()
            }
        rows.append(row)
    if not rows:
        raise ExperimentError(f"{shown}: dataset file {path} has no lines")
    return rows


def check_mappings(
    where: str,
    mappings: dict[str, str],
    inputs: list[str],
    columns: set[str],
    path: Path,
    outputs: list[str] | None,
    allow_run: bool,
) -> None:
    for target, expression in mappings.items():
        if target not in inputs:
            raise ExperimentError(
                f"{where}.mappings.{target}: the flow has no input {target!r}; inputs: {', '.join(inputs)}"
            )
        match = MAPPING_RE.match(str(expression))
        if not match:
            continue  # a constant value
        source, name = match.groups()
        if source == "data" and name not in columns:
            raise ExperimentError(
                f"{where}.mappings.{target}: {expression} names column {name!r}, which {path.name} does not "
                f"have; columns: {', '.join(sorted(columns))}"
            )
        if source == "run.outputs":
            if not allow_run:
                raise ExperimentError(
                    f"{where}.mappings.{target}: {expression}: run outputs exist only for evaluators"
                )
            if outputs is not None and name not in outputs:
                raise ExperimentError(
                    f"{where}.mappings.{target}: {expression}: the flow has no output {name!r}; "
                    f"outputs: {', '.join(outputs)}"
                )


def map_inputs(
    mappings: dict[str, str], row: dict[str, Any], outputs: dict[str, Any] | None
) -> dict[str, Any]:
    if not mappings:
        return dict(row)
    out: dict[str, Any] = {}
    for target, expression in mappings.items():
        match = MAPPING_RE.match(str(expression))
        if not match:
            out[target] = expression
        elif match.group(1) == "data":
            out[target] = row.get(match.group(2))
        else:
            out[target] = (outputs or {}).get(match.group(2))
    return out


def build_plan(
    experiment: Experiment,
    engine: Engine,
    *,
    flow_name: str,
    mode: str | None = None,
    pages_url: str | None = None,
    datasets: list[str] | None = None,
    connection_overrides: dict[str, str] | None = None,
) -> Plan:
    file = experiment.file
    flow_dir = experiment.flow_dir()
    info = engine.describe(flow_dir)
    variants = expand(experiment, info, mode)
    flow_hash = content_hash(flow_dir)
    wanted = datasets or [d.name for d in experiment.datasets]
    names = [d.name for d in experiment.datasets]
    for name in wanted:
        if name not in names:
            raise ExperimentError(f"{file}: datasets: no dataset {name!r}; datasets: {', '.join(names)}")
    plan = Plan(experiment, flow_name, flow_dir, info, flow_hash, variants, [])
    overrides = json.dumps(connection_overrides or experiment.connection_overrides, sort_keys=True)
    for index, dataset in enumerate(experiment.datasets):
        if dataset.name not in wanted:
            continue
        where = f"{file}: datasets[{index}]"
        if dataset.source.startswith("azureml:"):
            raise ExperimentError(
                f"{where}.source: {dataset.source!r} is an Azure ML data asset; local runs need a file "
                "(run in the workspace with --run-in workspace)"
            )
        path = experiment.source_path(dataset.source)
        rows = read_rows(path, f"{where}.source", pages_url)
        columns = set().union(*(r.keys() for r in rows))
        check_mappings(where, dataset.mappings, info.inputs, columns, path, info.outputs, allow_run=False)
        for number, row in enumerate(rows):
            missing = [m for m in _data_columns(dataset.mappings) if m not in row]
            if missing:
                raise ExperimentError(
                    f"{path}: line {number + 1}: missing column(s) {missing} used by {where}"
                )
        plan.rows[dataset.name] = rows
        plan.data_hashes[dataset.name] = content_hash(path)
        inputs = [map_inputs(dataset.mappings, row, None) for row in rows]
        for variant in variants:
            key = hash_text(
                "run",
                flow_hash,
                plan.data_hashes[dataset.name],
                json.dumps(dataset.mappings, sort_keys=True),
                variant.id,
                json.dumps(variant.params, sort_keys=True, default=str),
                str(pages_url),
                overrides,
                engine.name,
            )
            plan.runs.append(
                Job(
                    "run",
                    f"{dataset.name}/{variant.id}",
                    flow_dir,
                    variant,
                    dataset.name,
                    inputs,
                    list(range(len(rows))),
                    key,
                )
            )
    _check_evaluators(plan, engine, pages_url)
    plan.primary_dataset = _primary_dataset(plan)
    return plan


def _data_columns(mappings: dict[str, str]) -> list[str]:
    out = []
    for expression in mappings.values():
        match = MAPPING_RE.match(str(expression))
        if match and match.group(1) == "data":
            out.append(match.group(2))
    return out


def _check_evaluators(plan: Plan, engine: Engine, pages_url: str | None) -> None:
    experiment = plan.experiment
    names = [d.name for d in experiment.datasets]
    for e_index, evaluator in enumerate(experiment.evaluators):
        where = f"{experiment.file}: evaluators[{e_index}]"
        if evaluator.builtin is not None:  # an azure-ai-evaluation evaluator: inputs from its catalog entry
            info = _builtin_info(evaluator, where)
        else:
            flow_dir = (experiment.base_dir / str(evaluator.flow)).resolve()
            if not flow_dir.is_dir():
                raise ExperimentError(
                    f"{where}.flow: {evaluator.flow!r}: no such evaluator flow folder ({flow_dir})"
                )
            info = engine.describe(flow_dir)
        for d_index, dataset in enumerate(evaluator.datasets):
            dwhere = f"{where}.datasets[{d_index}]"
            if dataset.reference not in names:
                raise ExperimentError(
                    f"{dwhere}.reference: {dataset.reference!r} is not a dataset of the experiment; "
                    f"datasets: {', '.join(names)}"
                )
            path = experiment.source_path(dataset.source)
            rows = read_rows(path, f"{dwhere}.source", pages_url)
            columns = set().union(*(r.keys() for r in rows))
            check_mappings(
                dwhere, dataset.mappings, info.inputs, columns, path, plan.info.outputs, allow_run=True
            )
            reference_rows = plan.rows.get(dataset.reference)
            if reference_rows is not None and len(reference_rows) != len(rows):
                raise ExperimentError(
                    f"{dwhere}.source: {path.name} has {len(rows)} lines "
                    f"but dataset {dataset.reference!r} has "
                    f"{len(reference_rows)}; evaluation lines pair with run lines one to one"
                )


def _builtin_info(evaluator: Evaluator, where: str) -> FlowInfo:
    """The inputs of a built-in evaluator, validated (name, NLTK data, init, judge)."""
    from release.errors import UserError
    from release.experiment import builtin_evaluators

    try:
        spec = builtin_evaluators.check(str(evaluator.builtin), evaluator.init, evaluator.judge, where)
    except UserError as exc:
        raise ExperimentError(str(exc)) from None
    for d_index, dataset in enumerate(evaluator.datasets):
        unmapped = [name for name in spec.inputs if dataset.mappings and name not in dataset.mappings]
        if unmapped:
            raise ExperimentError(
                f"{where}.datasets[{d_index}].mappings: {spec.name} needs {', '.join(unmapped)}; "
                f"map each, e.g. response: ${{run.outputs.<output>}}, ground_truth: ${{data.<column>}}"
            )
    return FlowInfo(
        path=Path(f"builtin:{spec.name}"), kind="flex", inputs=[*spec.inputs, *spec.optional], outputs=None
    )


def _primary_dataset(plan: Plan) -> str:
    experiment = plan.experiment
    if experiment.primary_dataset:
        names = [d.name for d in experiment.datasets]
        if experiment.primary_dataset not in names:
            raise ExperimentError(
                f"{experiment.file}: primary_dataset: {experiment.primary_dataset!r} is not a dataset; "
                f"datasets: {', '.join(names)}"
            )
        if experiment.primary_dataset in plan.rows:
            return experiment.primary_dataset
    return next(iter(plan.rows))
