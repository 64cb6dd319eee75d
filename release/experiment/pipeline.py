"""The experiment pipeline behind the CLI: environment -> plan -> runs -> evaluation -> report -> gate.

``run_experiment`` (runs only), ``run_evaluation`` (runs + evaluators + report), ``run_gate`` (gate over
an evaluation, recording the chosen variant) and ``register`` (flow and datasets by content hash).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.config import REPO_ROOT, EnvironmentConfig, EnvSecret, load_config, resolve_secret
from release.engine.base import ConnectionSpec, Engine
from release.errors import CheckFailed, UserError
from release.experiment.contamination import check_experiment
from release.experiment.evaluate import RunMetrics, evaluate, run_metrics
from release.experiment.gate import GateOutcome, run_gate
from release.experiment.lines import read_lines
from release.experiment.plan import Plan, build_plan
from release.experiment.report import (
    make_run_dir,
    new_run_id,
    strict_json,
    write_html,
    write_line_outputs,
    write_metrics,
)
from release.experiment.runner import JobResult, Runner
from release.experiment.spec import Experiment, load_experiment
from release.git import git_sha
from release.registry.base import Registration, Registry, Selection
from release.registry.local import LocalRegistry

log = logging.getLogger(__name__)
SELECTION_FILE = "selection.json"


@dataclass
class Options:
    flow: str
    env: str = "local"
    mode: str | None = None
    datasets: list[str] | None = None
    variants: dict[str, list[str]] = field(default_factory=dict)
    concurrency: int | None = None
    max_retries: int | None = None
    run_in: str | None = None
    use_cache: bool = True
    progress: bool = True
    reports_dir: Path = REPO_ROOT / "reports"
    state_dir: Path | None = None
    start_local: bool = True
    experiment_file: Path | None = None
    # the gate writes reports/<flow>/latest/selection.json (what register/build/release use) only
    # when asked (the CLI and the release job ask; notebooks and library calls do not) and only
    # for a complete evaluation (every dataset, every variant of the experiment file)
    record_selection: bool = False


@dataclass
class Context:
    options: Options
    config: EnvironmentConfig
    experiment: Experiment
    state_dir: Path
    pages_url: str | None
    run_in: str

    @property
    def flow_dir_name(self) -> str:
        return self.options.flow


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- context --------------------------------------------------------------------------
def load_context(options: Options) -> Context:
    config = load_config(options.env)
    settings = config.flows.get(options.flow)
    flow_path = REPO_ROOT / (settings.path if settings else f"flows/{options.flow}")
    experiment_file = options.experiment_file or flow_path / (
        settings.experiment if settings else "experiment.yaml"
    )
    if settings is None and not flow_path.is_dir() and options.experiment_file is None:
        known = sorted(config.flows) or sorted(p.name for p in (REPO_ROOT / "flows").glob("*/") if p.is_dir())
        raise UserError(
            f"config/{options.env}.yaml: flows.{options.flow}: unknown flow; flows: {', '.join(known)}"
        )
    experiment = load_experiment(experiment_file, options.env)
    updates: dict[str, Any] = {}
    if options.variants:
        updates["variants"] = options.variants
    if options.concurrency:
        updates["concurrency"] = options.concurrency
    if options.max_retries is not None:
        updates["max_retries"] = options.max_retries
    if updates:
        experiment = experiment.model_copy(update=updates)
    run_in = options.run_in or (settings.run_in if settings else "local")
    if config.kind == "local" and run_in != "local":
        raise UserError(
            f"--run-in {run_in}: the local environment runs flows on this machine; use --run-in local"
        )
    if config.kind == "local":
        local = config.local_settings()
        state = Path(local.state_dir)
        state_dir = options.state_dir or (state if state.is_absolute() else REPO_ROOT / state)
        pages_url = f"http://127.0.0.1:{local.ports.pages}/pages"
    else:
        state_dir = options.state_dir or REPO_ROOT / ".genaiops" / options.env
        pages_url = None
    return Context(options, config, experiment, state_dir.resolve(), pages_url, run_in)


def ensure_local_services(ctx: Context) -> None:
    """The local model endpoint and page server must answer; start just those two when they do not."""
    if ctx.config.kind != "local":
        return
    from release.local_env.environment import LocalEnvironment
    from release.local_env.net import http_status

    local = ctx.config.local_settings()
    missing = [
        name
        for name, port in (("model", local.ports.model), ("pages", local.ports.pages))
        if http_status("/health", port, timeout_s=2.0) != 200
    ]
    if not missing:
        return
    if not ctx.options.start_local:
        raise UserError(
            f"the local {' and '.join(missing)} server(s) do not answer; run `make local-up` first"
        )
    _stderr(f"local environment: starting {', '.join(missing)} (run `make local-up` for everything)")
    LocalEnvironment(local, source=f"config/{ctx.options.env}.yaml", log=_stderr).up(only=missing)


def connections_for(ctx: Context, needed: list[str]) -> list[ConnectionSpec]:
    """Connection specs with their keys read now (env var; the local model key from the state folder)."""
    by_name = {c.name: c for c in ctx.config.connections}
    specs = []
    for name in needed:
        conn = by_name.get(name)
        if conn is None:
            raise UserError(
                f"config/{ctx.options.env}.yaml: connections: no connection {name!r}, which flow "
                f"{ctx.options.flow} uses; add it or map it with connection_overrides in "
                f"experiment.{ctx.options.env}.yaml"
            )
        key = ""
        if conn.secret is not None:
            if (
                ctx.config.kind == "local"
                and isinstance(conn.secret, EnvSecret)
                and not os.environ.get(conn.secret.env)
            ):
                from release.local_env.environment import LocalEnvironment

                key = LocalEnvironment(ctx.config.local_settings()).model_api_key()
            else:
                key = resolve_secret(conn.secret)
        specs.append(
            ConnectionSpec(conn.name, conn.category, conn.target, key, conn.api_version, conn.api_type)
        )
    return specs


def make_engine(ctx: Context) -> Engine:
    from release.engine import get_engine

    return get_engine(ctx.state_dir / "promptflow")


def make_plan(ctx: Context, engine: Engine) -> Plan:
    return build_plan(
        ctx.experiment,
        engine,
        flow_name=ctx.options.flow,
        mode=ctx.options.mode,
        pages_url=ctx.pages_url,
        datasets=ctx.options.datasets,
        connection_overrides=ctx.experiment.connection_overrides,
    )


def make_runner(ctx: Context, engine: Engine, plan: Plan) -> Runner:
    overrides = ctx.experiment.connection_overrides
    needed: set[str] = {overrides.get(c, c) for c in plan.info.connections}
    for evaluator in ctx.experiment.evaluators:
        if evaluator.judge is not None:  # a built-in evaluator's judge model
            needed.add(overrides.get(evaluator.judge.connection, evaluator.judge.connection))
        if evaluator.flow is None:
            continue
        info = engine.describe((ctx.experiment.base_dir / evaluator.flow).resolve())
        needed |= {overrides.get(c, c) for c in info.connections}
    return Runner(
        engine,
        connections_for(ctx, sorted(needed)),
        ctx.state_dir / "experiments" / "cache",
        concurrency=ctx.experiment.concurrency,
        max_retries=ctx.experiment.max_retries,
        request_timeout_s=ctx.experiment.request_timeout_s,
        connection_overrides=overrides,
        progress=ctx.options.progress,
        use_cache=ctx.options.use_cache,
    )


def _run_jobs(ctx: Context, runner: Runner, plan: Plan) -> list[JobResult]:
    if ctx.run_in == "workspace":
        from release.engine import azure_runs  # batch runs in the Azure ML workspace

        results: list[JobResult] = azure_runs.run_jobs(ctx.config, plan, runner)
        return results
    return runner.run(plan.runs, label=f"{ctx.options.flow} runs")


# -- commands -------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    run_id: str
    report_dir: Path
    plan: Plan
    runs: list[JobResult]
    metrics: list[RunMetrics] = field(default_factory=list)
    gate: GateOutcome | None = None
    max_in_flight: int = 0
    retries: int = 0


def _summary(ctx: Context, plan: Plan, run_id: str, runner: Runner, runs: list[JobResult]) -> dict[str, Any]:
    return {
        "flow": ctx.options.flow,
        "experiment": ctx.experiment.name,
        "experiment_run": run_id,
        "environment": ctx.options.env,
        "mode": ctx.options.mode or ctx.experiment.mode,
        "variants": len(plan.variants),
        "datasets": len(plan.rows),
        "runs": len(runs),
        "lines": sum(len(r.lines) for r in runs),
        "cached_lines": sum(r.cached_lines for r in runs),
        "failed_lines": sum(len(r.failed) for r in runs),
        "concurrency": runner.concurrency,
        "max_in_flight": runner.max_in_flight,
        "retries": runner.retries,
        "primary_dataset": plan.primary_dataset,
        "scope": _scope(ctx),
        "flow_hash": plan.flow_hash,
        "git_sha": git_sha(),
    }


def _scope(ctx: Context) -> dict[str, Any]:
    """What this run covered; ``partial`` runs never change what a release deploys."""
    names = [d.name for d in ctx.experiment.datasets]
    datasets = [n for n in names if n in (ctx.options.datasets or names)]
    reasons = []
    if datasets != names:
        reasons.append(f"datasets {', '.join(datasets)} of {', '.join(names)}")
    if ctx.options.variants:
        reasons.append(
            "--variants " + " ".join(f"{k}={','.join(v)}" for k, v in ctx.options.variants.items())
        )
    return {"datasets": datasets, "partial": bool(reasons), "why": "; ".join(reasons)}


def run(options: Options, with_evaluation: bool) -> ExperimentResult:
    """Validate everything, run every variant x dataset (cached), evaluate if asked, write the report."""
    ctx = load_context(options)
    engine = make_engine(ctx)
    plan = make_plan(ctx, engine)  # every check happens here, before any line runs
    runner = make_runner(ctx, engine, plan)
    ensure_local_services(ctx)
    _stderr(
        f"{options.flow}: {len(plan.variants)} variant(s) x {len(plan.rows)} dataset(s) = {len(plan.runs)} "
        f"run(s), concurrency {runner.concurrency}"
    )
    hits = check_experiment(ctx.experiment) if with_evaluation else []
    for hit in hits:
        _stderr(f"contamination: {hit.describe()}")
    try:
        runs = _run_jobs(ctx, runner, plan)
        metrics: list[RunMetrics] = []
        evals: list[JobResult] = []
        if with_evaluation:
            metrics, evals = evaluate(plan, runs, runner, engine, ctx.pages_url, ctx.config.pricing)
    finally:
        runner.close()
    run_id, report_dir = make_run_dir(options.reports_dir, options.flow)
    write_line_outputs(report_dir, runs + evals)
    summary = _summary(ctx, plan, run_id, runner, runs)
    if not metrics:  # runs only: line counts, cost and latency per run
        metrics = [run_metrics(r, ctx.config.pricing, engine, runner.overrides) for r in runs]
    summary["kind"] = "evaluation" if with_evaluation else "experiment"
    if with_evaluation:
        summary["evaluator_metrics"] = evaluator_metrics(ctx.experiment, evals)
        summary["primary_metric"] = primary_metric_note(ctx.experiment, summary["evaluator_metrics"])
        summary["contamination"] = [hit.to_json() for hit in hits]
    write_metrics(report_dir, metrics, summary)
    baseline = registry_for(ctx).baseline(options.flow)
    write_html(report_dir, f"{options.flow}: {summary['kind']} {run_id}", metrics, summary, baseline)
    if with_evaluation:
        _write_pointer(options.reports_dir / options.flow, "latest-evaluation.json", run_id, report_dir)
    _stderr(f"report: {report_dir / 'report.html'}")
    result = ExperimentResult(
        run_id, report_dir, plan, runs, metrics, None, runner.max_in_flight, runner.retries
    )
    failed = [(r.job.name, len(r.failed), r.failed[0].error) for r in runs if r.failed]
    if failed:
        detail = "; ".join(f"{name}: {n} line(s) failed (first: {str(err)[:160]})" for name, n, err in failed)
        raise CheckFailed(
            f"{sum(n for _, n, _ in failed)} line(s) still failed after retries: {detail}; "
            f"report {report_dir}"
        )
    return result


def evaluator_metrics(experiment: Experiment, evals: list[JobResult]) -> dict[str, list[str]]:
    """Metric names per evaluator, in the experiment's evaluator order and each one's own order."""
    out: dict[str, list[str]] = {e.name: [] for e in experiment.evaluators}
    for result in evals:
        names = out.setdefault(str(result.job.evaluator), [])
        names += [n for n in result.metrics if n not in names]
    return out


def default_primary_metric(experiment: Experiment, metrics: dict[str, list[str]]) -> tuple[str, str] | None:
    """``(metric, evaluator)`` when ``primary_metric`` and ``gates.thresholds`` are both unset (the
    template's format has neither): the first metric of the first evaluator that produced one."""
    if experiment.primary_metric or experiment.gates.thresholds:
        return None
    for evaluator, names in metrics.items():
        if names:
            return names[0], evaluator
    return None


def primary_metric_note(experiment: Experiment, metrics: dict[str, list[str]]) -> str:
    """How the gate picks its primary metric, for the report and the CLI."""
    if experiment.primary_metric:
        return experiment.primary_metric
    default = default_primary_metric(experiment, metrics)
    if default is not None:
        return f"{default[0]} (default: the first metric of evaluator {default[1]!r}; set primary_metric)"
    if experiment.gates.thresholds:
        return f"{next(iter(experiment.gates.thresholds))} (default: the first gates.thresholds metric)"
    return "not set"


def _write_pointer(folder: Path, name: str, run_id: str, report_dir: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"experiment_run": run_id, "report_dir": str(report_dir)}), encoding="utf-8")
    os.replace(tmp, folder / name)


def registry_for(ctx: Context) -> Registry:
    if ctx.config.kind == "local":
        return LocalRegistry(ctx.state_dir)
    from release.registry.azureml import AzureMLRegistry

    registry: Registry = AzureMLRegistry.from_config(ctx.config)
    return registry


def _gate_dataset(ctx: Context) -> str | None:
    """The dataset ``--dataset`` names for the gate when it does not include the primary one."""
    named = ctx.options.datasets
    primary = ctx.experiment.primary_dataset or ctx.experiment.datasets[0].name
    return named[0] if named and primary not in named else None


def gate(options: Options, report: Path | None = None) -> tuple[GateOutcome, Path]:
    """Gate the latest evaluation (or ``report``; evaluates first when there is none)."""
    ctx = load_context(options)
    report_dir = report
    if report_dir is None:
        pointer = options.reports_dir / options.flow / "latest-evaluation.json"
        if pointer.is_file():
            report_dir = Path(json.loads(pointer.read_text(encoding="utf-8"))["report_dir"])
    if report_dir is None or not (report_dir / "metrics.json").is_file():
        report_dir = run(options, with_evaluation=True).report_dir
    data = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    rows = [RunMetrics.from_json(r) for r in data["runs"]]
    registry = registry_for(ctx)
    baseline = registry.baseline(options.flow)
    experiment = ctx.experiment
    default = default_primary_metric(experiment, data.get("evaluator_metrics") or {})
    if default is not None:
        _stderr(
            f"primary_metric: not set in {experiment.file}; using {default[0]!r}, the first metric of "
            f"the first evaluator ({default[1]}); set primary_metric to choose another"
        )
        experiment = experiment.model_copy(update={"primary_metric": default[0]})
    baseline_lines = None
    if baseline is not None:
        baseline_dir = options.reports_dir / options.flow / baseline.experiment_run
        if baseline_dir.is_dir() and baseline_dir.resolve() != report_dir.resolve():
            baseline_lines = read_lines(baseline_dir)
    outcome = run_gate(
        experiment,
        rows,
        baseline,
        lines=read_lines(report_dir),
        baseline_lines=baseline_lines,
        contamination=check_experiment(experiment),
        dataset=_gate_dataset(ctx),
    )
    verdict: dict[str, Any] = {
        "flow": options.flow,
        "experiment_run": data["experiment_run"],
        "passed": outcome.passed,
        "primary_metric": outcome.primary_metric,
        "primary_dataset": outcome.primary_dataset,
        "failures": outcome.failures,
        "rejected": outcome.rejected,
        "checks": outcome.checks,
        "statistics": outcome.to_json(),
        "baseline": None
        if baseline is None
        else {
            "flow_version": baseline.flow_version,
            "variant_id": baseline.variant_id,
            "metrics": baseline.metrics,
        },
    }
    if outcome.chosen is not None and outcome.passed:
        verdict["selection"] = {
            "flow": options.flow,
            "variant_id": outcome.chosen.variant_id,
            "variants": outcome.chosen.variant.variants,
            "params": outcome.chosen.variant.params,
            "metrics": outcome.chosen.metrics,
            "experiment_run": data["experiment_run"],
            "flow_hash": data.get("flow_hash"),
            "git_sha": git_sha(),
            "report_dir": str(report_dir),
        }
    gate_file = report_dir / f"gate-{new_run_id()}.json"
    gate_file.write_text(json.dumps(strict_json(verdict), indent=2, allow_nan=False), encoding="utf-8")
    write_html(
        report_dir,
        f"{options.flow}: evaluation {data['experiment_run']} (gated)",
        rows,
        {k: v for k, v in data.items() if k != "runs"},
        baseline,
        outcome,
    )
    if "selection" in verdict:
        text = json.dumps(strict_json(verdict["selection"]), indent=2, allow_nan=False)
        (report_dir / SELECTION_FILE).write_text(text, encoding="utf-8")
        scope = data.get("scope") or {"partial": True, "why": "the evaluation does not say what it covered"}
        if scope.get("partial"):
            outcome.not_recorded = f"partial evaluation ({scope.get('why')})"
        elif not options.record_selection:
            outcome.not_recorded = "a library or notebook call (Options.record_selection is off)"
        else:
            latest = options.reports_dir / options.flow / "latest"
            latest.mkdir(parents=True, exist_ok=True)
            tmp = latest / f".{SELECTION_FILE}.tmp{os.getpid()}"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, latest / SELECTION_FILE)
            outcome.recorded = latest / SELECTION_FILE
    return outcome, report_dir


def register(options: Options, selection_file: Path | None = None) -> list[Registration]:
    """Register the flow and its datasets (a new version only when the content hash changed) and
    record the gate's selection (``reports/<flow>/latest/selection.json``) as the release baseline."""
    ctx = load_context(options)
    registry = registry_for(ctx)
    sha = git_sha()
    flow_dir = ctx.experiment.flow_dir()
    out = [registry.register_flow(options.flow, flow_dir, git_sha=sha)]
    for dataset in ctx.experiment.datasets:
        if dataset.source.startswith("azureml:"):
            continue
        out.append(
            registry.register_data(dataset.name, ctx.experiment.source_path(dataset.source), git_sha=sha)
        )
    path = selection_file or options.reports_dir / options.flow / "latest" / SELECTION_FILE
    if path.is_file():
        chosen = json.loads(path.read_text(encoding="utf-8"))
        if chosen.get("flow_hash") not in (None, out[0].content_hash):
            _stderr(
                f"note: {path} was chosen for another flow content ({chosen.get('flow_hash')}); "
                "not recorded as the baseline: run `genaiops gate` again"
            )
        else:
            registry.record_selection(
                Selection(
                    flow=options.flow,
                    flow_version=out[0].version,
                    variant_id=chosen["variant_id"],
                    variant={"variants": chosen["variants"], "params": chosen["params"]},
                    metrics=chosen["metrics"],
                    experiment_run=chosen["experiment_run"],
                    git_sha=sha,
                )
            )
    return out
