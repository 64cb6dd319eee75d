"""``genaiops local up|down|status``: the local environment (see docs/local-environment.md)."""

from __future__ import annotations

import argparse
import json

from release.commands.common import add_env
from release.errors import CheckFailed
from release.local_env.environment import LocalEnvironment


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("local", help="start, inspect or stop the local environment (127.0.0.1 only)")
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start Docker engine, registry, nginx router, model endpoint, pages")
    add_env(up)
    up.set_defaults(handler=_up)
    status = actions.add_parser("status", help="each component: pid, port, URL and health")
    add_env(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)
    down = actions.add_parser("down", help="stop exactly what 'local up' started")
    add_env(down)
    down.set_defaults(handler=_down)


def _env(args: argparse.Namespace) -> LocalEnvironment:
    return LocalEnvironment.from_config(args.env, log=lambda line: print(line, flush=True))


def _up(args: argparse.Namespace) -> int:
    env = _env(args)
    result = env.up()
    _print_table(env)
    if not result.changed:
        print("nothing changed: the local environment was already up")
    return 0


def _status(args: argparse.Namespace) -> int:
    env = _env(args)
    if args.json:
        print(json.dumps({"state_dir": str(env.state_dir), "components": env.status_json()}, indent=2))
    else:
        _print_table(env)
    return 0


def _down(args: argparse.Namespace) -> int:
    env = _env(args)
    env.down()
    leftover = [s.name for s in env.status() if s.owned and s.state != "stopped"]
    if leftover:
        raise CheckFailed(f"local down: still running: {leftover}")
    print("local environment stopped")
    return 0


def _print_table(env: LocalEnvironment) -> None:
    print(f"state: {env.state_dir}")
    print(f"{'component':<10} {'health':<10} {'pid':>7} {'port':>6}  url")
    for s in env.status():
        pid = str(s.pid) if s.pid else "-"
        port = str(s.port) if s.port else "-"
        print(f"{s.name:<10} {s.state:<10} {pid:>7} {port:>6}  {s.url or '-'}")
