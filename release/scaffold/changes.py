"""Which flows a change touches: the pipelines' per-flow path filters, evaluated by one function.

A PR pipeline runs a flow's experiment and gate only when the PR changed a file under one of
that flow's path filters. The filters are listed in the pipeline files (one entry per flow,
plus paths every flow depends on); this module compares them with ``git diff --name-only``.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from release.errors import UserError

GIT_TIMEOUT_SECONDS = 60
EMIT_FORMATS = ("text", "azure", "github")


def split_paths(text: str) -> list[str]:
    """``"flows/a, release/engine,,"`` -> ``["flows/a", "release/engine"]``."""
    return [p.strip().strip("/") for p in text.split(",") if p.strip().strip("/")]


def matches(file: str, pattern: str) -> bool:
    """A file matches a filter when it is the path, lies under it, or fits it as a glob."""
    pattern = pattern.strip("/")
    return file == pattern or file.startswith(pattern + "/") or fnmatch.fnmatchcase(file, pattern)


def touched(files: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The changed files that fall under the filters (empty: the flow is untouched)."""
    return [f for f in files if any(matches(f, p) for p in patterns)]


def changed_files(base: str, repo: Path) -> list[str]:
    """``git diff --name-only <base>...HEAD``: what the branch changed since it left ``base``."""
    command = ["git", "-C", str(repo), "diff", "--name-only", f"{base}...HEAD"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS)
    except FileNotFoundError:
        raise UserError("git is not installed; install git to compare a change with its base") from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"git diff against {base!r} took over {GIT_TIMEOUT_SECONDS}s; nothing decided"
        ) from None
    if result.returncode != 0:
        raise UserError(
            f"--base {base}: git cannot compare it with HEAD ({_first_line(result.stderr)}); fetch the full "
            "history (Azure DevOps: checkout fetchDepth: 0; GitHub: actions/checkout fetch-depth: 0)"
        )
    return [line for line in result.stdout.splitlines() if line]


def emit(flow: str, is_touched: bool, fmt: str) -> str:
    """Reports the decision where the CI system reads it; returns the line printed."""
    value = "true" if is_touched else "false"
    if fmt == "azure":
        return f"##vso[task.setvariable variable=FLOW_TOUCHED]{value}"
    if fmt == "github":
        output = os.environ.get("GITHUB_OUTPUT")
        if not output:
            raise UserError("--emit github: GITHUB_OUTPUT is not set (only GitHub Actions sets it)")
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"touched={value}\n")
        return f"touched={value}"
    return value


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")
