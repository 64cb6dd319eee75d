"""Subcommands for local environment (placeholder until issue #3 lands)."""

from __future__ import annotations

import argparse

from release.commands.common import add_env, not_built


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name in "local".split():
        parser = sub.add_parser(name, help=f"{name} (not built yet: issue #3)")
        add_env(parser)
        parser.add_argument("--flow", default=None)
        parser.set_defaults(handler=not_built(3, f"'genaiops {name}'"))
