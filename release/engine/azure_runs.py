"""Batch runs in the Azure ML workspace, for datasets that outgrow one machine.

Chosen by config (``flows.<flow>.run_in: workspace``) or ``--run-in workspace``; the experiment
plan, variants and evaluation stay the same as for local runs. Each job (one variant over one
dataset) becomes an Azure ML pipeline job running the flow as a prompt flow parallel component
(``azure.ai.ml.load_component(<flow>.yaml)``) on the workspace's compute cluster
(``workspace.batch_compute`` in the config; parallel components need a cluster):

* the job's rows are uploaded as JSON lines to a content-addressed datastore path with the
  Azure identity (the same rows are never uploaded twice);
* the variant is applied exactly as locally: node variants and hyperparameters are written into
  a resolved copy of the flow by the engine (DAG), or into the ``init`` defaults (flex);
* the pipeline job is named from the job's content key, so a re-run after an interruption finds
  the job already submitted (or finished) and only waits for it;
* every wait is bounded; lines without a result come back as failed lines.

Why not ``promptflow-azure``: its last release (1.18.5) imports
``azure.ai.ml._restclient.v2022_10_01``, which azure-ai-ml 1.35 no longer ships, so
``import promptflow.azure`` fails with the pinned SDK. The flow component in azure-ai-ml is the
supported way to run a flow over large data in the workspace and needs nothing else.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from release.azure.clients import AzureContext, find, must
from release.azure.storage import default_container, download, upload
from release.config import EnvironmentConfig
from release.errors import CheckFailed, UserError
from release.registry.hashing import content_hash

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from release.experiment.plan import Job, Plan
    from release.experiment.runner import JobResult, LineRecord, Runner

log = logging.getLogger(__name__)

RUN_TIMEOUT_S = 4 * 3600.0  # the longest a batch of workspace runs may take
POLL_INTERVAL_S = 30.0
MINI_BATCH_SIZE = 16
DONE = {"Completed", "Failed", "Canceled", "NotResponding"}
OUTPUT_FILE = "parallel_run_step.jsonl"
_JOB_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]")
_FLEX = "flow.flex.yaml"
_DAG = "flow.dag.yaml"


def job_name(flow: str, job: Job) -> str:
    """Deterministic per job content: resubmitting after an interruption finds the same job."""
    return _JOB_NAME_RE.sub("_", f"genaiops_{flow}_{job.name}_{job.key[:16]}")[:255]


def output_prefix(flow: str, name: str) -> str:
    return f"genaiops/runs/{flow}/outputs/{name}"


def flow_file(folder: Path) -> Path:
    for name in (_DAG, _FLEX):
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no {_DAG} or {_FLEX}; is this a flow folder?")


def with_tools_json(flow: Path) -> Path:
    """The flow component needs ``.promptflow/flow.tools.json``: prompt flow's validate writes it."""
    if not (flow.parent / ".promptflow" / "flow.tools.json").is_file():
        from promptflow.client import PFClient

        result = PFClient().flows.validate(str(flow))
        if not result.passed:
            raise UserError(f"{flow}: prompt flow validation failed: {result}")
    return flow


def resolved_flow(runner: Runner, job: Job, work: Path) -> Path:
    """The flow file with the job's variant applied, the same way local runs apply it."""
    engine: Any = runner.engine
    info = engine.describe(job.flow_dir)
    if info.kind == "dag":
        if not hasattr(engine, "resolved_dag"):
            raise UserError(f"engine {engine.name!r} cannot resolve variants for workspace runs")
        folder: Path = engine._materialize(
            job.flow_dir, engine.resolved_dag(job.flow_dir, job.variant, runner.overrides)
        )
        return folder / _DAG
    # flex: hyperparameters are init parameters; write them as the defaults of a copy
    target = work / job.flow_dir.name
    shutil.copytree(
        job.flow_dir, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow", "*.pyc")
    )
    spec = yaml.safe_load((target / _FLEX).read_text(encoding="utf-8")) or {}
    init = spec.setdefault("init", {})
    for key, value in job.variant.params.items():
        if key not in init:
            raise UserError(f"{job.flow_dir / _FLEX}: init: no parameter {key!r} for hyperparameter {key}")
        init[key] = {
            **(init[key] or {}),
            "default": runner.overrides.get(value, value) if isinstance(value, str) else value,
        }
    (target / _FLEX).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return target / _FLEX


class WorkspaceRuns:
    """Submits the plan's jobs as Azure ML pipeline jobs and collects their lines."""

    def __init__(
        self,
        config: EnvironmentConfig,
        ctx: AzureContext | None = None,
        *,
        timeout_s: float = RUN_TIMEOUT_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        instance_count: int = 1,
    ) -> None:
        self.config = config
        self.ctx = ctx or AzureContext.from_config(config)
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.instance_count = instance_count
        self.compute = config.workspace.batch_compute
        self._ml: MLClient | None = None

    @property
    def ml(self) -> MLClient:
        if self._ml is None:
            self._ml = self.ctx.ml_client()
        return self._ml

    def upload_rows(self, flow: str, job: Job) -> str:
        with tempfile.TemporaryDirectory(prefix="genaiops-rows-") as tmp:
            data = Path(tmp) / "data.jsonl"
            data.write_text(
                "".join(json.dumps(row, sort_keys=True) + "\n" for row in job.inputs), encoding="utf-8"
            )
            digest = content_hash(data).split(":", 1)[1]
            return upload(self.ctx, self.ml, data, f"genaiops/runs/{flow}/{digest}").uri

    def submit(self, flow: str, job: Job, runner: Runner) -> str:
        from azure.ai.ml import Input, Output, load_component
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.dsl import pipeline

        name = job_name(flow, job)
        existing = find(f"get workspace job {name}", lambda: self.ml.jobs.get(name))
        if existing is not None:
            log.info("workspace job %s already submitted (%s); waiting for it", name, existing.status)
            return name
        data_uri = self.upload_rows(flow, job)
        columns = sorted({key for row in job.inputs for key in row})
        with tempfile.TemporaryDirectory(prefix="genaiops-flow-") as tmp:
            component = load_component(str(with_tools_json(resolved_flow(runner, job, Path(tmp)))))
            instance_count = self.instance_count

            @pipeline(name=name, display_name=f"{flow} {job.name}", experiment_name=f"genaiops-{flow}")  # type: ignore[call-overload,misc]
            def batch(data):  # type: ignore[no-untyped-def]  # the dsl reads real annotations only
                node = component(data=data, **{key: "${data." + key + "}" for key in columns})
                node.resources = {"instance_count": instance_count}
                node.mini_batch_size = MINI_BATCH_SIZE
                node.max_concurrency_per_instance = 4
                node.mini_batch_error_threshold = -1  # failed lines are reported, not fatal
                node.retry_settings = {"max_retries": 2, "timeout": 1200}
                return {"flow_outputs": node.outputs.flow_outputs}

            job_entity = batch(data=Input(path=data_uri, type=AssetTypes.URI_FILE))
            job_entity.name = name
            # outputs go to a known path, so results are read back without the run-history API
            datastore, _ = default_container(self.ctx, self.ml)
            job_entity.outputs.flow_outputs = Output(
                type=AssetTypes.URI_FOLDER,
                path=f"azureml://datastores/{datastore}/paths/{output_prefix(flow, name)}/",
            )
            job_entity.settings.default_compute = self.compute
            job_entity.tags = {"genaiops.flow": flow, "genaiops.job": job.name, "genaiops.key": job.key}
            must(f"submit workspace job {name}", lambda: self.ml.jobs.create_or_update(job_entity))
        log.info("submitted workspace job %s", name)
        return name

    def wait(self, names: list[str]) -> dict[str, str]:
        """Bounded wait until every job reached a final status."""
        deadline = time.monotonic() + self.timeout_s
        status: dict[str, str] = {}
        while True:
            for name in names:
                if status.get(name) not in DONE:
                    job = must(f"get workspace job {name}", lambda n=name: self.ml.jobs.get(n))  # type: ignore[misc]
                    status[name] = str(getattr(job.status, "value", job.status))
            if all(s in DONE for s in status.values()):
                return status
            if time.monotonic() >= deadline:
                pending = {n: s for n, s in status.items() if s not in DONE}
                raise CheckFailed(
                    f"workspace jobs not finished after {self.timeout_s:.0f} s: {pending}; "
                    "re-run the same command later to pick them up (nothing is submitted twice)"
                )
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def lines(self, flow: str, name: str, job: Job) -> list[LineRecord]:
        """Download the flow outputs and turn them into the runner's line records."""
        from release.experiment.datasets import json_lines
        from release.experiment.runner import LineRecord

        by_line: dict[int, dict[str, Any]] = {}
        data = download(self.ctx, self.ml, f"{output_prefix(flow, name)}/{OUTPUT_FILE}")
        # prompt flow writes outputs with ensure_ascii=False: split at "\n" only (U+2028 is data)
        for _, text in json_lines((data or b"").decode("utf-8")):
            row = json.loads(text)
            by_line[int(row.pop("line_number"))] = row
        records = []
        for position, inputs in enumerate(job.inputs):
            outputs = by_line.get(position)
            records.append(
                LineRecord(
                    index=job.indices[position],
                    inputs=inputs,
                    outputs=outputs,
                    error=None
                    if outputs is not None
                    else f"line {position} has no result in workspace job {name}",
                    attempts=1,
                )
            )
        return records

    def run_jobs(self, plan: Plan, runner: Runner) -> list[JobResult]:
        from release.experiment.runner import JobResult, LineRecord

        names = [self.submit(plan.flow_name, job, runner) for job in plan.runs]
        status = self.wait(names)
        results = []
        for job, name in zip(plan.runs, names, strict=True):
            if status[name] == "Completed":
                lines = self.lines(plan.flow_name, name, job)
            else:
                lines = [
                    LineRecord(
                        index=i, inputs=row, error=f"workspace job {name} ended {status[name]}", attempts=1
                    )
                    for i, row in zip(job.indices, job.inputs, strict=True)
                ]
            results.append(JobResult(job, lines))
        return results


def run_jobs(config: EnvironmentConfig, plan: Plan, runner: Runner) -> list[JobResult]:
    """The seam the experiment pipeline calls for ``--run-in workspace``."""
    return WorkspaceRuns(config).run_jobs(plan, runner)
