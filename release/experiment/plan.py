"""Everything an experiment will run, built and validated before the first line runs.

Checks: flow and evaluator folders, dataset files (read by :mod:`release.experiment.datasets`),
every mapping (:mod:`release.experiment.mappings`: flow inputs, ``${data.x}`` against every line,
``${run.outputs.x}`` against the flow's outputs, ``${run.inputs.x}`` against the referenced
dataset's lines), evaluator references, line counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.engine.base import Engine, FlowInfo, FlowVariant
from release.experiment import mappings as mapping
from release.experiment.datasets import DataRows, DatasetError, read_dataset
from release.experiment.expand import expand
from release.experiment.mappings import map_inputs
from release.experiment.spec import Evaluator, Experiment, ExperimentError
from release.registry.hashing import content_hash, hash_text

__all__ = ["Job", "Plan", "build_plan", "load_rows", "map_inputs", "read_rows"]

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
class EvalData:
    """One evaluator dataset, read and checked: its lines and the mapping its evaluator applies."""

    rows: list[dict[str, Any]]
    mappings: dict[str, Any]  # completed with prompt flow's default mapping


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
    eval_data: dict[tuple[int, int], EvalData] = field(default_factory=dict)  # (evaluator, dataset)
    sources: dict[str, DataRows] = field(default_factory=dict)  # dataset -> its lines and their origins


def load_rows(path: Path, shown: str, pages_url: str | None) -> DataRows:
    """A dataset source's lines (any format prompt flow reads), ``{pages_url}`` filled in."""
    if not path.exists():
        raise ExperimentError(f"{shown}: dataset file {path} does not exist; fix 'source' or add the file")
    try:
        data = read_dataset(path, str(path))
    except DatasetError as exc:
        raise ExperimentError(f"{shown}: {exc}") from None
    if pages_url is not None:
        data.rows = [
            {k: v.replace(PAGES_PLACEHOLDER, pages_url) if isinstance(v, str) else v for k, v in row.items()}
            for row in data.rows
        ]
    return data


def read_rows(path: Path, shown: str, pages_url: str | None) -> list[dict[str, Any]]:
    """The lines of a dataset source (see :func:`load_rows`)."""
    return load_rows(path, shown, pages_url).rows


def check_mappings(
    where: str,
    mappings: dict[str, Any],
    info: FlowInfo,
    data: DataRows,
    *,
    run_outputs: list[str] | None = None,
    run_data: DataRows | None = None,
    allow_run: bool = False,
) -> dict[str, Any]:
    """Validate ``mappings`` for the flow ``info`` over ``data``; return the completed mapping.

    Every target must be a flow input; every reference must resolve on every line: ``${data.x}``
    in each line of ``data``, ``${run.inputs.x}`` in each line of ``run_data`` (the referenced
    dataset), ``${run.outputs.x}`` among ``run_outputs`` (None: not known before the flow runs).
    """
    for target in mappings:
        if target not in info.inputs:
            raise ExperimentError(
                f"{where}.mappings.{target}: the flow has no input {target!r}; "
                f"inputs: {', '.join(info.inputs) or 'none'}"
            )
    completed = mapping.complete(mappings, info.inputs, info.optional_inputs)
    for target, expression in completed.items():
        field_name = f"{where}.mappings.{target}" if target in mappings else f"{where}.mappings"
        try:
            reference = mapping.parse(expression)
        except ValueError as exc:
            raise ExperimentError(f"{field_name}: {exc}") from None
        if reference is None:
            continue
        if reference.source in mapping.RUN_SOURCES and not allow_run:
            raise ExperimentError(
                f"{field_name}: {expression}: a flow's own dataset has no referenced run; "
                "${run.outputs.x} and ${run.inputs.x} are for evaluator datasets"
            )
        if reference.source == "run.outputs":
            if run_outputs is not None and reference.name not in run_outputs:
                raise ExperimentError(
                    f"{field_name}: {expression}: the flow has no output {reference.name!r}; "
                    f"outputs: {', '.join(run_outputs) or 'none'}"
                )
            continue
        lines = data if reference.source == "data" else run_data
        if lines is None:
            continue  # the referenced dataset is not part of this run (--dataset)
        columns = lines.columns
        if reference.name not in columns:
            hint = (
                ""
                if target in mappings
                else (
                    f"; input {target!r} has no mapping and no default, so prompt flow reads the column of "
                    f"that name: add mappings.{target}"
                )
            )
            raise ExperimentError(
                f"{field_name}: {expression} names column {reference.name!r}, which "
                f"{lines.source.name} does not have; columns: {', '.join(sorted(columns))}{hint}"
            )
        for origin, row in zip(lines.origins, lines.rows, strict=True):
            if reference.name not in row:
                raise ExperimentError(
                    f"{origin}: missing column(s) [{reference.name!r}] used by {where} ({expression})"
                )
    return completed


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
        data = load_rows(path, f"{where}.source", pages_url)
        completed = check_mappings(where, dataset.mappings, info, data)
        rows = data.rows
        plan.rows[dataset.name] = rows
        plan.sources[dataset.name] = data
        plan.data_hashes[dataset.name] = content_hash(path)
        inputs = [map_inputs(completed, row) for row in rows]
        for variant in variants:
            key = hash_text(
                "run",
                flow_hash,
                plan.data_hashes[dataset.name],
                json.dumps(completed, sort_keys=True, default=str),
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
                    f"datasets: {', '.join(names)} (an experiment.<env>.yaml that replaces 'datasets' "
                    "replaces no evaluator: give it an 'evaluators' block too)"
                )
            reference_rows = plan.rows.get(dataset.reference)
            if reference_rows is None:
                # the referenced dataset does not run now (--dataset): its evaluation does not either
                for target, expression in dataset.mappings.items():
                    try:
                        mapping.parse(expression)
                    except ValueError as exc:
                        raise ExperimentError(f"{dwhere}.mappings.{target}: {exc}") from None
                continue
            if dataset.source.startswith("azureml:"):
                raise ExperimentError(
                    f"{dwhere}.source: {dataset.source!r} is an Azure ML data asset; local runs need a file "
                    "(run in the workspace with --run-in workspace)"
                )
            path = experiment.source_path(dataset.source)
            data = load_rows(path, f"{dwhere}.source", pages_url)
            run_data = plan.sources[dataset.reference]
            completed = check_mappings(
                dwhere,
                dataset.mappings,
                info,
                data,
                run_outputs=plan.info.outputs,
                run_data=run_data,
                allow_run=True,
            )
            if len(reference_rows) != len(data.rows):
                raise ExperimentError(
                    f"{dwhere}.source: {path.name} has {len(data.rows)} lines "
                    f"but dataset {dataset.reference!r} has "
                    f"{len(reference_rows)}; evaluation lines pair with run lines one to one"
                )
            plan.eval_data[(e_index, d_index)] = EvalData(data.rows, completed)


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
