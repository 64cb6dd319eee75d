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
from pathlib import Path

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
    parser.add_argument(
        "--project",
        metavar="DIR",
        help="the project folder (holding config/ and flows/); default: the nearest one at or "
        "above the working directory, as git finds its repository",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"release.commands.{name}")
        module.register(sub)
    return parser


class PromptFlowChatter(logging.Filter):
    """Drops prompt flow's own log lines, e.g. "environ OTLP endpoint is not set, will skip the
    following setup." (promptflow/tracing/_start_trace.py, on the root logger), "Process N had
    been terminated." (promptflow/executor/_process_manager.py) and the traceback it logs for
    every failed line: our runner reports each failed line once, with its reason. Only its
    CRITICAL records still show. Installed unless ``-v``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        path = record.pathname.replace("\\", "/")
        return "/promptflow/" not in path and not record.name.startswith("execution")


def _quiet_prompt_flow() -> None:
    chatter = PromptFlowChatter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(chatter)


def _early_options(raw: list[str]) -> tuple[bool, str | None]:
    """``-v`` and ``--project`` act before the command modules (and the config) are imported."""
    verbose, project = False, None
    for index, arg in enumerate(raw):
        if arg in ("-v", "--verbose"):
            verbose = True
        elif arg == "--project" and index + 1 < len(raw):
            project = raw[index + 1]
        elif arg.startswith("--project="):
            project = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            break  # the command: what follows is its own
    return verbose, project


def _use_project(project: str) -> None:
    from release.project import PROJECT_ENV, project_root

    os.environ[PROJECT_ENV] = project
    wanted = project_root()
    loaded = sys.modules.get("release.config")
    if loaded is not None and Path(loaded.REPO_ROOT) != wanted:
        raise UserError(
            f"--project {project}: this process already works on {loaded.REPO_ROOT}; "
            "run the CLI in a new process for another project"
        )


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    verbose, project = _early_options(raw)
    if not verbose:
        # prompt flow's execution loggers print to stdout at PF_LOGGING_LEVEL, read when they
        # are made (at import): set it before the command modules import promptflow
        os.environ.setdefault("PF_LOGGING_LEVEL", "CRITICAL")
    if project is not None:
        try:
            _use_project(project)
        except UserError as exc:
            print(f"genaiops: error: {exc}", file=sys.stderr)
            return exc.exit_code
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
