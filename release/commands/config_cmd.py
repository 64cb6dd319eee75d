"""``genaiops config validate|show``: check the typed environment configuration."""

from __future__ import annotations

import argparse
import json

from release.commands.common import add_env
from release.config import available_environments, load_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("config", help="validate or show config/<env>.yaml")
    actions = parser.add_subparsers(dest="action", required=True)
    validate = actions.add_parser("validate", help="validate one environment or all of them")
    validate.add_argument("--env", default=None, help="environment (default: every config/*.yaml)")
    validate.set_defaults(handler=_validate)
    show = actions.add_parser("show", help="print the validated config as JSON")
    add_env(show)
    show.set_defaults(handler=_show)


def _validate(args: argparse.Namespace) -> int:
    envs = [args.env] if args.env else available_environments()
    for env in envs:
        cfg = load_config(env)
        if cfg.kind == "azure":  # Azure's own rules (names, targets, network), no CDKTF import
            from infra.validate import check

            check(cfg)
        counts = f"{len(cfg.flows)} flow(s), {len(cfg.connections)} connection(s)"
        print(f"config/{env}.yaml: ok ({cfg.kind}, {counts})")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(load_config(args.env).model_dump(mode="json"), indent=2))
    return 0
