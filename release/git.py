"""The git commit this checkout is at: a label on images, reports and registrations."""

from __future__ import annotations

import subprocess
from pathlib import Path

from release.config import REPO_ROOT

GIT_TIMEOUT_S = 10


def _git(repo: Path, *args: str) -> str | None:
    """The stripped output of ``git -C repo <args>``, or None when git fails or is missing
    (bounded by :data:`GIT_TIMEOUT_S`)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def git_sha(repo: Path = REPO_ROOT) -> str | None:
    """``HEAD``'s sha, or None outside a git checkout."""
    return _git(repo, "rev-parse", "HEAD")


def commit_epoch(repo: Path = REPO_ROOT) -> int | None:
    """``HEAD``'s commit time in seconds since the epoch (SOURCE_DATE_EPOCH for image builds),
    or None outside a git checkout."""
    text = _git(repo, "log", "-1", "--format=%ct", "HEAD")
    return int(text) if text is not None and text.isdigit() else None
