"""``genaiops``: the one command line of the toolkit. Thin: parse, call, set the exit code.

Each group of subcommands lives in ``release/commands/<group>.py`` and exposes
``register(subparsers)``; the handler it sets returns an exit code (0 = success).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from release.errors import UserError

COMMAND_MODULES = (
    "config_cmd",
    "local",
    "infra",
    "experiment",
    "image_cmd",
    "release_cmd",
    "scaffold",
    "doctor",
    "cleanup",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genaiops",
        description="GenAIOps for prompt flow: experiments, gates, images, releases, infrastructure.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"release.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # the Azure SDKs log every credential they try at WARNING; our errors say what to do
        logging.getLogger("azure").setLevel(logging.ERROR)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"genaiops: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("genaiops: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
