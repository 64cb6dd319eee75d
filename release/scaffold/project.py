"""``genaiops init [DIR]``: a minimal genaiops project in a folder of your own.

Writes ``config/local.yaml`` (the local environment), a ``Makefile`` that calls the installed
``genaiops`` CLI, PR pipelines for GitHub Actions and Azure DevOps, a ``.gitignore``, then
scaffolds one flow with :func:`release.scaffold.generator.new_flow` (which also adds it to the
config and the pipelines). The result runs ``genaiops experiment``, ``evaluate`` and ``release``
on the local environment as generated. Nothing is overwritten: a folder that already holds
``config/`` or ``flows/`` is refused, and a failure removes what was written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from release import __version__
from release.errors import UserError
from release.scaffold.generator import ScaffoldResult, new_flow, validate_name

TEMPLATE = Path(__file__).resolve().parent / "templates" / "project"
# template file -> where it goes in the project
FILES = {
    "config/local.yaml": "config/local.yaml",
    "Makefile": "Makefile",
    "github/workflows/pr.yml": ".github/workflows/pr.yml",
    "azure-pipelines/pr.yml": ".azure-pipelines/pr.yml",
    "gitignore": ".gitignore",
}


@dataclass(frozen=True)
class InitResult:
    root: Path
    written: list[str]
    flow: ScaffoldResult


def init_project(root: Path, flow: str = "my_flow", kind: str = "dag") -> InitResult:
    """Write a minimal project into ``root`` (created if missing).

    Raises :class:`UserError` when ``root`` already holds ``config/`` or ``flows/`` or a file
    this would write, or when ``flow`` is not a valid flow name.
    """
    root = root.resolve()
    taken = [name for name in ("config", "flows") if (root / name).exists()]
    taken += [dest for dest in FILES.values() if (root / dest).exists()]
    if taken:
        raise UserError(
            f"{root}: already holds {', '.join(sorted(set(taken)))}; genaiops init writes a new project "
            "only (use `genaiops new-flow NAME` to add a flow to an existing one)"
        )
    validate_name(flow, root)
    written: list[str] = []
    try:
        for source, dest in FILES.items():
            text = (TEMPLATE / source).read_text(encoding="utf-8")
            text = text.replace("{flow}", flow).replace("{version}", __version__)
            target = root / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(dest)
        scaffolded = new_flow(flow, kind=kind, root=root)
    except BaseException:
        for dest in written:
            (root / dest).unlink(missing_ok=True)
        shutil.rmtree(root / "flows" / flow, ignore_errors=True)
        for folder in ("config", "flows", ".github/workflows", ".github", ".azure-pipelines"):
            path = root / folder
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise
    return InitResult(root, written, scaffolded)
