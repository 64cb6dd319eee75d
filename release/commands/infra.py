"""Infrastructure subcommands: ``synth``, ``scan``, ``plan``, ``apply`` (issue #4).

- ``synth [--env E]``: writes ``cdktf.out/stacks/<env>/cdk.tf.json`` (no ``--env``: every
  Azure environment in config/, in one process); ``local`` has no cloud stack.
- ``scan --env E``: synth, then the checkov policy gate (``infra/policy/``); fails on any
  failed check and names it. ``--skip-synth`` scans what is already synthesized.
- ``plan --env E``: synth + scan + ``terraform init`` (the env's backend) + ``plan -out`` +
  a summary. Without terraform or Azure credentials it stops after scan, non-zero.
- ``apply --env E``: applies the saved plan of ``plan`` and nothing else.
The infra package (CDKTF, ~10 s to import) is loaded only by these handlers.
"""

from __future__ import annotations

import argparse
import os
import time

from release.commands.common import add_env
from release.config import EnvironmentConfig, available_environments, load_config, require_deployable
from release.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    synth = sub.add_parser("synth", help="synthesize Terraform JSON (every Azure env, or --env)")
    synth.add_argument("--env", default=None, help="one environment (default: every environment)")
    synth.set_defaults(handler=cmd_synth)

    scan = sub.add_parser("scan", help="synth + checkov policy gate on one environment's stack")
    add_env(scan)
    scan.add_argument("--skip-synth", action="store_true", help="scan the stack already in cdktf.out/ as is")
    scan.set_defaults(handler=cmd_scan)

    plan = sub.add_parser("plan", help="synth + scan + terraform init/plan -out + summary")
    add_env(plan)
    plan.set_defaults(handler=cmd_plan)

    apply = sub.add_parser("apply", help="apply the saved plan of `genaiops plan`")
    add_env(apply)
    apply.set_defaults(handler=cmd_apply)


def _cloud_config(env: str, command: str) -> EnvironmentConfig:
    cfg = load_config(env)
    if cfg.kind != "azure":
        raise UserError(
            f"{env}: the '{env}' environment (kind {cfg.kind}) has no cloud stack, so there is "
            f"nothing to {command}; use --env dev or --env prod (local runs with `genaiops local up`)"
        )
    return cfg


def _synth(configs: list[EnvironmentConfig]) -> None:
    from infra.app import synth

    started = time.perf_counter()
    paths = synth(configs)
    took = time.perf_counter() - started
    for env, path in paths.items():
        print(f"synth {env}: {os.path.relpath(path)}")
    print(f"synthesized {len(paths)} stack(s) in {took:.1f} s")


def cmd_synth(args: argparse.Namespace) -> int:
    names = [args.env] if args.env else available_environments()
    configs = [load_config(name) for name in names]  # every config valid before any synth
    cloud = [cfg for cfg in configs if cfg.kind == "azure"]
    for cfg in configs:
        if cfg.kind != "azure":
            print(f"synth {cfg.environment}: kind {cfg.kind} has no cloud stack; nothing to synthesize")
    if cloud:
        _synth(cloud)
    return 0


def _scan(cfg: EnvironmentConfig) -> None:
    from infra.app import stack_dir
    from infra.scan import gate

    result = gate(cfg.environment, stack_dir(cfg.environment))
    print(result.summary(cfg.environment))


def cmd_scan(args: argparse.Namespace) -> int:
    cfg = _cloud_config(args.env, "scan")
    if not args.skip_synth:
        _synth([cfg])
    _scan(cfg)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = require_deployable(_cloud_config(args.env, "plan"), "plan")  # no example values
    _synth([cfg])
    _scan(cfg)
    from infra import terraform
    from infra.app import stack_dir

    binary = terraform.preflight()
    stack = stack_dir(cfg.environment)
    print(terraform.plan(cfg, stack, binary))
    print(
        f"saved {os.path.relpath(terraform.saved_plan(stack) or stack)}; "
        f"apply it with `make apply ENV={cfg.environment}`"
    )
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    cfg = require_deployable(_cloud_config(args.env, "apply"), "apply")
    from infra import terraform
    from infra.app import stack_dir

    if terraform.saved_plan(stack_dir(cfg.environment)) is None:
        saved = stack_dir(cfg.environment) / terraform.PLAN_FILE
        raise UserError(
            f"{os.path.relpath(saved)} does not exist: run `make plan ENV={cfg.environment}` first"
        )
    terraform.apply(cfg, stack_dir(cfg.environment), terraform.preflight())
    print(f"applied {cfg.environment}")
    return 0
