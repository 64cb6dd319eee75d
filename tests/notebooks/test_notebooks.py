"""Every notebook in notebooks/ executes headless (nbclient, the .venv's Python kernel).

The notebooks run against the real local model endpoint and page server, started here on
free ports in a temporary state folder and stopped at the end; reports go to a temp folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient import NotebookClient

from release.config import REPO_ROOT, LocalPorts, LocalSettings
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CANARY = "sk-canary-notebook-41b7"


class VenvKernelSpecs(KernelSpecManager):
    """The kernel is the Python running these tests (the project's .venv), whatever Jupyter finds."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="genaiops .venv",
            language="python",
        )


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("notebook-services")
    settings = LocalSettings(
        state_dir=str(state / "local"),
        ports=LocalPorts(registry=free_port(), router=free_port(), model=free_port(), pages=free_port()),
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCAL_MODEL_API_KEY", CANARY)
    mp.setenv("GENAIOPS_MODEL_PORT", str(settings.ports.model))
    mp.setenv("GENAIOPS_PAGES_PORT", str(settings.ports.pages))
    mp.setenv("GENAIOPS_LOCAL_STATE_DIR", settings.state_dir)
    mp.setenv("GENAIOPS_NB_REPORTS_DIR", str(state / "reports"))
    mp.setenv("GENAIOPS_NB_STATE_DIR", str(state / "experiments"))
    mp.delenv("GENAIOPS_CONFIG_DIR", raising=False)
    env = LocalEnvironment(settings, log=lambda line: None)
    env.up(only=["model", "pages"])
    try:
        yield state
    finally:
        env.down()
        mp.undo()


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS, "notebooks/ has no notebook"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_headless(path: Path, notebook_env: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name}: commit notebooks without outputs"
    )
    client = NotebookClient(
        notebook,
        timeout=300,
        startup_timeout=120,
        kernel_name="python3",
        kernel_manager_kwargs={"kernel_spec_manager": VenvKernelSpecs()},
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    kinds = {key for o in outputs for key in o.get("data", {})}
    assert "image/svg+xml" in kinds, "the report's charts are shown inline"
    assert "text/html" in kinds, "metrics are shown as a table"
    text = "".join(str(o.get("text", "")) + str(o.get("data", "")) for o in outputs)
    # the notebook gates its smoke-dataset run explicitly on that dataset: the deterministic local
    # model classifies the smoke pages right, so the gate passes; a notebook never records the
    # selection a release deploys (docs/experiments.md, "What a release deploys")
    assert "gate passed" in text and "gate FAILED" not in text
    assert not list((notebook_env / "reports").rglob("latest/selection.json"))
    assert CANARY not in text, "the model key leaked into the notebook's output"
    assert list((notebook_env / "reports").rglob("report.html")), "the report went to the temp folder"
