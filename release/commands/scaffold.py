"""``genaiops new-flow`` (scaffold a use case) and ``genaiops flow-changed`` (per-flow path filters)."""

from __future__ import annotations

import argparse

from release.commands.common import add_env
from release.config import REPO_ROOT, load_config
from release.errors import UserError
from release.scaffold import changes


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = sub.add_parser(
        "init",
        help="write a minimal project: config for local, one flow, a Makefile, PR pipelines",
        description="Write a new genaiops project into DIR (default: the working directory).",
    )
    init.add_argument("directory", nargs="?", default=".", help="the project folder (created if missing)")
    init.add_argument("--flow", default="my_flow", help="name of the scaffolded flow (default: my_flow)")
    init.add_argument("--kind", choices=("dag", "flex"), default="dag", help="DAG flow or flex flow")
    init.set_defaults(handler=_init)

    new = sub.add_parser(
        "new-flow",
        help="scaffold a new flow: folder, datasets, experiment + overlays, evaluator, config, pipelines",
        description="Scaffold flows/NAME so that `make experiment FLOW=NAME ENV=local` passes as generated.",
    )
    new.add_argument("name", help="flow name: lowercase letters, digits and _ (e.g. invoice_routing)")
    new.add_argument(
        "--kind", choices=("dag", "flex"), default="dag", help="DAG flow or flex flow (Python class)"
    )
    new.add_argument("--description", default=None, help="one line saying what the flow does")
    new.add_argument("--dry-run", action="store_true", help="list what would be written, write nothing")
    new.set_defaults(handler=_new_flow)

    changed = sub.add_parser(
        "flow-changed",
        help="did a change touch a flow? (the pipelines' per-flow path filters)",
        description="Compares `git diff --name-only BASE...HEAD` with the flow's path filters.",
    )
    add_env(changed)
    changed.add_argument("--flow", required=True, help="flow name (a flows.<name> entry of the config)")
    changed.add_argument(
        "--paths", default="", help="comma-separated path filters (default: the flow's path)"
    )
    changed.add_argument(
        "--base", default="", help="git ref to compare with; empty: the flow counts as touched"
    )
    changed.add_argument("--emit", choices=changes.EMIT_FORMATS, default="text", help="where to report it")
    changed.set_defaults(handler=_flow_changed)


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from release.scaffold.project import init_project

    result = init_project(Path(args.directory), flow=args.flow, kind=args.kind)
    for path in [*result.written, *result.flow.written]:
        print(f"wrote {path}")
    print(f"project ready in {result.root}")
    print(
        "its local environment keeps its state (and model key) in .genaiops/local of the project; "
        "stop another project's local environment first (genaiops local down there), or point "
        "GENAIOPS_LOCAL_STATE_DIR at it"
    )
    print(f"next: cd {result.root} && genaiops release --flow {args.flow} --env local")
    return 0


def _new_flow(args: argparse.Namespace) -> int:
    from release.scaffold.generator import new_flow

    result = new_flow(args.name, kind=args.kind, description=args.description, dry_run=args.dry_run)
    verb = "would write" if args.dry_run else "wrote"
    for path in result.written:
        print(f"{verb} {path}")
    for path in result.edited:
        print(f"{'would edit' if args.dry_run else 'edited'} {path}")
    if not args.dry_run:
        print(f"next: make experiment FLOW={args.name} ENV=local   (docs/new-flow.md)")
    return 0


def _flow_changed(args: argparse.Namespace) -> int:
    config = load_config(args.env)
    if args.flow not in config.flows:
        raise UserError(
            f"config/{args.env}.yaml: flows.{args.flow}: no such flow; configured: {sorted(config.flows)}"
        )
    patterns = changes.split_paths(args.paths) or [config.flows[args.flow].path]
    if not args.base:
        print(f"{args.flow}: no --base given: the flow counts as touched")
        print(changes.emit(args.flow, True, args.emit))
        return 0
    hits = changes.touched(changes.changed_files(args.base, REPO_ROOT), patterns)
    for path in hits[:20]:
        print(f"{args.flow}: changed {path}")
    if not hits:
        print(f"{args.flow}: nothing under {', '.join(patterns)} changed since {args.base}")
    print(changes.emit(args.flow, bool(hits), args.emit))
    return 0
