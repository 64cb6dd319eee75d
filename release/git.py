"""The git commit this checkout is at: a label on images, reports and registrations."""

from __future__ import annotations

import subprocess
from pathlib import Path

from release.config import REPO_ROOT


def git_sha(repo: Path = REPO_ROOT) -> str | None:
    """``HEAD``'s sha, or None outside a git checkout (bounded by a 10 s timeout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def commit_epoch(repo: Path = REPO_ROOT) -> int | None:
    """``HEAD``'s commit time in seconds since the epoch (SOURCE_DATE_EPOCH for image builds),
    or None outside a git checkout (bounded by a 10 s timeout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "log", "-1", "--format=%ct", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() else None
