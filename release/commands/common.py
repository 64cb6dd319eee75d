"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import os

from release.config import EnvironmentConfig, load_config


def add_env(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--env",
        default=None if required else os.environ.get("GENAIOPS_ENV", "local"),
        required=required,
        help="environment name: config/<env>.yaml (default: local)",
    )


def add_flow(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--flow", required=required, help="flow name under flows/")


def env_config(args: argparse.Namespace) -> EnvironmentConfig:
    return load_config(args.env)


def not_built(issue: int, what: str):  # type: ignore[no-untyped-def]
    """A handler for a command whose issue has not landed: says so and exits non-zero."""
    from release.errors import NotBuiltYet

    def handler(args: argparse.Namespace) -> int:
        raise NotBuiltYet(f"{what} is not built yet (issue #{issue}); nothing was done")

    return handler
