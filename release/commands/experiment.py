"""``experiment``, ``evaluate``, ``gate``, ``register``: a flow's variants from runs to the release baseline.

genaiops experiment --flow web_classification --env local      # run every variant x dataset (cached)
genaiops evaluate   --flow web_classification --env local      # + evaluators, report.html/csv/json
genaiops gate       --flow web_classification --env local      # thresholds + regression; exit 1 on failure
genaiops register   --flow web_classification --env local      # new versions only when content changed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from release.commands.common import add_env, add_flow
from release.config import REPO_ROOT
from release.errors import CheckFailed, UserError


def _variants(values: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in values or []:
        node, sep, ids = value.partition("=")
        if not sep or not node or not ids:
            raise UserError(
                f"--variants {value!r}: expected NODE=VARIANT[,VARIANT...], "
                "e.g. summarize_text_content=variant_1"
            )
        out.setdefault(node, []).extend(v for v in ids.split(",") if v)
    return out


def _common(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    add_env(parser)
    add_flow(parser)
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=REPO_ROOT / "reports",
        help="where reports/<flow>/<experiment-run>/ go (default: reports/)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="cache, prompt flow home and local registry (default: the environment's state folder)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        dest="experiment_file",
        help="another experiment file (default: the flow's experiment.yaml; overlays still apply)",
    )
    if not runs:
        return
    parser.add_argument(
        "--mode",
        choices=["template", "grid"],
        default=None,
        help="template: one node's variants at a time; grid: every combination "
        "(default: the experiment file's mode)",
    )
    parser.add_argument(
        "--dataset", action="append", dest="datasets", default=None, help="run only this dataset (repeatable)"
    )
    parser.add_argument(
        "--variants",
        action="append",
        default=None,
        metavar="NODE=V1[,V2]",
        help="only these variants of a node (repeatable)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="lines in flight at once (default: file)"
    )
    parser.add_argument(
        "--max-retries", type=int, default=None, help="retries of a throttled line (default: file)"
    )
    parser.add_argument(
        "--run-in",
        choices=["local", "workspace"],
        default=None,
        help="where batch runs execute (default: flows.<flow>.run_in of the config)",
    )
    parser.add_argument("--no-cache", action="store_true", help="run every line again")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-start",
        action="store_true",
        help="fail instead of starting the local model endpoint and page server",
    )


def _options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from release.experiment.pipeline import Options

    if getattr(args, "concurrency", None) is not None and args.concurrency < 1:
        raise UserError(f"--concurrency {args.concurrency}: must be at least 1")
    return Options(
        flow=args.flow,
        env=args.env,
        mode=getattr(args, "mode", None),
        datasets=getattr(args, "datasets", None),
        variants=_variants(getattr(args, "variants", None)),
        concurrency=getattr(args, "concurrency", None),
        max_retries=getattr(args, "max_retries", None),
        run_in=getattr(args, "run_in", None),
        use_cache=not getattr(args, "no_cache", False),
        progress=not getattr(args, "no_progress", False),
        reports_dir=args.reports_dir.resolve(),
        state_dir=args.state_dir.resolve() if args.state_dir else None,
        start_local=not getattr(args, "no_start", False),
        experiment_file=args.experiment_file.resolve() if args.experiment_file else None,
        record_selection=True,
    )


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _print_table(result) -> None:  # type: ignore[no-untyped-def]
    names: list[str] = []
    for row in result.metrics:
        names += [n for n in row.metrics if n not in names]
    print("variant | dataset | " + " | ".join(names))
    for row in result.metrics:
        values = " | ".join(_number(row.metrics[n]) if n in row.metrics else "-" for n in names)
        print(f"{row.variant_id} | {row.dataset} | {values}")
    print(f"report: {result.report_dir / 'report.html'}")


def cmd_experiment(args: argparse.Namespace) -> int:
    from release.experiment import pipeline

    _print_table(pipeline.run(_options(args), with_evaluation=False))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from release.experiment import pipeline

    result = pipeline.run(_options(args), with_evaluation=True)
    _print_table(result)
    if args.no_gate:
        return 0
    args.report = result.report_dir
    return cmd_gate(args)


def cmd_gate(args: argparse.Namespace) -> int:
    from release.experiment import pipeline

    outcome, report_dir = pipeline.gate(_options(args), args.report)
    if not outcome.passed:
        raise CheckFailed(f"gate failed for {args.flow} ({report_dir}):\n  " + "\n  ".join(outcome.failures))
    assert outcome.chosen is not None
    print(
        f"gate passed: {args.flow}: chosen variant {outcome.chosen.variant_id} "
        f"({outcome.primary_metric} = {outcome.chosen.metrics[outcome.primary_metric]:.4f} on "
        f"{outcome.primary_dataset})"
    )
    if outcome.tie_break:
        print(f"tie: {outcome.tie_break}")
    if outcome.recorded is not None:
        print(f"selection: {outcome.recorded}")
    else:
        print(
            f"selection NOT recorded for release: {outcome.not_recorded}; "
            f"it is in {report_dir / 'selection.json'}"
        )
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from release.experiment import pipeline

    for item in pipeline.register(_options(args), args.selection):
        state = "registered new version" if item.created else "unchanged, kept version"
        print(f"{item.kind} {item.name}: {state} {item.version} ({item.content_hash[:19]})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("experiment", help="run a flow's variants over its datasets (concurrent, cached)")
    _common(p)
    p.set_defaults(handler=cmd_experiment)
    p = sub.add_parser("evaluate", help="experiment + evaluators + report (reports/<flow>/<run>/) + gate")
    _common(p)
    p.add_argument("--no-gate", action="store_true", help="evaluate and report only; do not apply the gate")
    p.set_defaults(handler=cmd_evaluate)
    p = sub.add_parser("gate", help="quality gate over the latest evaluation; records the chosen variant")
    _common(p)
    p.add_argument(
        "--report", type=Path, default=None, help="an evaluation report folder (default: the latest)"
    )
    p.set_defaults(handler=cmd_gate)
    p = sub.add_parser("register", help="register flow and datasets when their content changed")
    _common(p, runs=False)
    p.add_argument(
        "--selection",
        type=Path,
        default=None,
        help="the gate's selection.json (default: reports/<flow>/latest/selection.json)",
    )
    p.set_defaults(handler=cmd_register)
