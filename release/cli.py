"""``genaiops``: the one command line of the toolkit. Thin: parse, call, set the exit code.

Each group of subcommands lives in ``release/commands/<group>.py`` and exposes
``register(subparsers)``; the handler it sets returns an exit code (0 = success).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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


class PromptFlowChatter(logging.Filter):
    """Drops prompt flow's own INFO and WARNING lines, e.g. "environ OTLP endpoint is not set,
    will skip the following setup." (promptflow/tracing/_start_trace.py, on the root logger)
    and "Process N had been terminated." (promptflow/executor/_process_manager.py); its errors
    still show. Installed unless ``-v``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        path = record.pathname.replace("\\", "/")
        return "/promptflow/" not in path and not record.name.startswith("execution")


def _quiet_prompt_flow() -> None:
    # prompt flow's execution loggers print to stdout at PF_LOGGING_LEVEL, read when they are
    # made (at import); set it before anything imports promptflow
    os.environ.setdefault("PF_LOGGING_LEVEL", "ERROR")
    chatter = PromptFlowChatter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(chatter)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in raw or "--verbose" in raw
    if not verbose:
        os.environ.setdefault("PF_LOGGING_LEVEL", "ERROR")
    parser = build_parser()
    args = parser.parse_args(raw)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # the Azure SDKs log every credential they try at WARNING; our errors say what to do
        logging.getLogger("azure").setLevel(logging.ERROR)
        _quiet_prompt_flow()
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
