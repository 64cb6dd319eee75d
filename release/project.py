"""Where the user's project is: the folder holding ``config/`` and ``flows/``.

Found the way git finds its repository: ``--project DIR`` (the CLI puts it in
``$GENAIOPS_PROJECT`` before anything else is imported), else the nearest folder at or above the
working directory that holds both ``config/`` and ``flows/``. It is never the installed
package's location, so ``pip install genaiops`` works on any repository.

:data:`PACKAGE_ROOT` is the other root: the folder holding the ``release`` package, for the
toolkit's own files (templates, the serving code copied into flow images).
"""

from __future__ import annotations

import os
from pathlib import Path

from release.errors import UserError

PROJECT_ENV = "GENAIOPS_PROJECT"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("config", "flows")


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds every one of :data:`MARKERS`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if all((folder / marker).is_dir() for marker in MARKERS):
            return folder
    return None


def project_root(environ: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``$GENAIOPS_PROJECT`` when set (it must be a project), else :func:`find_project_root` of
    the working directory, else the working directory itself (``genaiops init`` and the
    commands that need no project work there; those that do say what is missing)."""
    env = os.environ if environ is None else environ
    given = env.get(PROJECT_ENV, "").strip()
    here = (cwd or Path.cwd()).resolve()
    if given:
        folder = Path(given).expanduser()
        folder = (folder if folder.is_absolute() else here / folder).resolve()
        if not folder.is_dir():
            raise UserError(f"--project {given}: no such folder")
        return folder
    return find_project_root(here) or here
