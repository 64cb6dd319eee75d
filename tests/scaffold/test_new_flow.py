"""`genaiops new-flow`: a scaffolded flow runs its experiment and passes its gate as generated.

Everything happens in a temporary copy of the repository (release/, config/, flows/, the
pipelines, the Makefile; .venv is linked), with ``PYTHONPATH`` pointing at the copy, so the
real repository never holds a test flow. The model endpoint and page server are the real local
ones, on free ports, stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from release.config import REPO_ROOT, LocalPorts, LocalSettings, load_config
from release.errors import UserError
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port
from release.scaffold.generator import MARKER, PIPELINE_ENTRIES, insert_flow_config, new_flow

CANARY = "sk-canary-scaffold-5d1e"
COPIED_DIRS = ("release", "config", "flows", "docs", ".azure-pipelines", ".github", "tests/pipelines")
COPIED_FILES = ("Makefile", "pyproject.toml", "requirements.lock")


def copy_repo(target: Path, dirs: tuple[str, ...] = COPIED_DIRS) -> Path:
    """A copy of the parts of the repository the scaffold and `make experiment` use.

    Its ``.venv`` is NOT the shared one: ``bin/python`` and ``bin/genaiops`` are wrappers around
    the real interpreter (the copy's code wins through ``PYTHONPATH``) and ``bin/pip`` refuses,
    so a `make` in the copy can never reinstall the shared environment from the copy.
    """
    for name in dirs:
        shutil.copytree(
            REPO_ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name in COPIED_FILES:
        shutil.copy2(REPO_ROOT / name, target / name)
    bin_dir = target / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrappers = {
        "python": f'exec {sys.executable} "$@"',
        "genaiops": f'exec {sys.executable} -m release "$@"',
        "pip": 'echo "test copy: refusing to install into the shared .venv" >&2; exit 97',
    }
    for name, body in wrappers.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    stamp = target / ".venv" / ".installed"
    stamp.touch()
    old = stamp.stat().st_mtime - 60
    for name in COPIED_FILES:
        os.utime(target / name, (old, old))  # make sees the copy's .venv as installed
    return target


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for base in ("config", ".azure-pipelines", ".github", "flows")
        for p in sorted((root / base).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The local model endpoint and page server on free ports; the env the copy's commands get."""
    state = tmp_path_factory.mktemp("scaffold-services")
    settings = LocalSettings(
        state_dir=str(state),
        ports=LocalPorts(registry=free_port(), router=free_port(), model=free_port(), pages=free_port()),
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCAL_MODEL_API_KEY", CANARY)
    env = LocalEnvironment(settings, log=lambda line: None)
    env.up(only=["model", "pages"])
    try:
        yield {
            "GENAIOPS_MODEL_PORT": str(settings.ports.model),
            "GENAIOPS_PAGES_PORT": str(settings.ports.pages),
            "GENAIOPS_LOCAL_STATE_DIR": str(state),
            "LOCAL_MODEL_API_KEY": CANARY,
        }
    finally:
        env.down()
        mp.undo()


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository copy with one DAG and one flex flow scaffolded through the CLI."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    for name, kind in (("demo_dag", "dag"), ("demo_flex", "flex")):
        result = run(root, [sys.executable, "-m", "release", "new-flow", name, "--kind", kind], {})
        assert result.returncode == 0, result.stderr
        assert "edited config/local.yaml" in result.stdout
    return root


def run(
    root: Path, command: list[str], extra_env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **extra_env, "PYTHONPATH": str(root)}
    env.pop("GENAIOPS_CONFIG_DIR", None)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_scaffolded_flows_pass_experiment_and_gate_as_generated(
    scaffolded: Path, services: dict[str, str]
) -> None:
    experiment = run(scaffolded, ["make", "experiment", "FLOW=demo_dag", "ENV=local"], services)
    assert experiment.returncode == 0, experiment.stderr[-3000:]
    assert "demo_dag_full" in experiment.stdout and "report:" in experiment.stdout
    for flow in ("demo_dag", "demo_flex"):
        evaluate = run(scaffolded, ["make", "evaluate", f"FLOW={flow}", "ENV=local"], services)
        assert evaluate.returncode == 0, evaluate.stderr[-3000:]
        assert f"gate passed: {flow}" in evaluate.stdout
        reports = list((scaffolded / "reports" / flow).glob("*/report.html"))
        assert reports
        for path in (scaffolded / "reports" / flow).rglob("*"):
            if path.is_file():
                assert CANARY not in path.read_text(errors="ignore"), path


def test_scaffold_adds_config_and_pipeline_entries_the_pipeline_checks_accept(scaffolded: Path) -> None:
    for env in ("local", "dev", "prod"):
        config = load_config(env, config_dir=scaffolded / "config")
        assert {"demo_dag", "demo_flex"} <= set(config.flows)
        assert config.flows["demo_dag"].release.smoke_tests
    assert load_config("prod", config_dir=scaffolded / "config").flows["demo_dag"].release.steps == [
        10,
        50,
        100,
    ]
    # the copy's own pipeline tests (flow lists = config, PR dataset exists, templates, commands)
    result = run(
        scaffolded, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/pipelines"], {}
    )
    assert result.returncode == 0, result.stdout[-3000:]
    pr = yaml.safe_load((scaffolded / ".azure-pipelines/pr.yml").read_text())
    flows = next(p for p in pr["parameters"] if p["name"] == "flows")["default"]
    assert {"name": "demo_flex", "paths": ["flows/demo_flex"], "dataset": "demo_flex_smoke"} in flows


def test_shared_files_keep_every_original_line(scaffolded: Path) -> None:
    edited = ["config/local.yaml", "config/dev.yaml", "config/prod.yaml", *PIPELINE_ENTRIES]
    for relative in edited:
        original = (REPO_ROOT / relative).read_text().splitlines()
        now = iter((scaffolded / relative).read_text().splitlines())
        assert all(line in now for line in original), f"{relative}: a line was lost or reordered"


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    root = copy_repo(tmp_path, dirs=("config", "flows", ".azure-pipelines", ".github"))
    before = snapshot(root)
    for name, error in (("Bad-Name", "not a flow name"), ("web_classification", "already exists")):
        with pytest.raises(UserError, match=error):
            new_flow(name, root=root)
    with pytest.raises(UserError, match=r"config/dev.yaml: the endpoint name .* would be 35 characters"):
        new_flow("a_rather_long_flow_name_x", root=root)
    with pytest.raises(UserError, match="--kind"):
        new_flow("fine_name", kind="graph", root=root)
    result = new_flow("dry_flow", dry_run=True, root=root)
    assert "flows/dry_flow/experiment.yaml" in result.written and "config/prod.yaml" in result.edited
    assert snapshot(root) == before


def test_a_failure_after_writing_rolls_every_file_back(tmp_path: Path) -> None:
    root = copy_repo(tmp_path, dirs=("config", "flows", ".azure-pipelines", ".github"))
    # an environment whose config cannot validate: the scaffold writes, validates, fails, restores
    (root / "config" / "staging.yaml").write_text(
        "# staging\nenvironment: staging\nkind: local\nlocal:\n  state_dir: ${GENAIOPS_SCAFFOLD_UNSET_X}\nflows: {}\n"
    )
    before = snapshot(root)
    with pytest.raises(UserError, match=r"config/staging.yaml would be invalid"):
        new_flow("late_failure", root=root)
    assert snapshot(root) == before
    assert not (root / "flows" / "late_failure").exists()


def test_a_missing_marker_is_named(tmp_path: Path) -> None:
    root = copy_repo(tmp_path, dirs=("config", "flows", ".azure-pipelines", ".github"))
    pr = root / ".azure-pipelines" / "pr.yml"
    pr.write_text(pr.read_text().replace(MARKER, "# (marker removed)"))
    before = snapshot(root)
    with pytest.raises(UserError, match=r"\.azure-pipelines/pr\.yml: the line .* is missing"):
        new_flow("no_marker", root=root)
    assert snapshot(root) == before


def test_insert_flow_config_keeps_comments_and_handles_empty_flows() -> None:
    text = "# head\nkind: local\nflows:\n  # first\n  a:\n    path: flows/a\n\n# tail comment\nlocal: {}\n"
    out = insert_flow_config(text, "b:\n  path: flows/b", "x.yaml")
    assert (
        out
        == "# head\nkind: local\nflows:\n  # first\n  a:\n    path: flows/a\n  b:\n    path: flows/b\n\n# tail comment\nlocal: {}\n"
    )
    assert yaml.safe_load(out)["flows"] == {"a": {"path": "flows/a"}, "b": {"path": "flows/b"}}
    empty = insert_flow_config("kind: local\nflows: {}\n", "b:\n  path: flows/b", "x.yaml")
    assert yaml.safe_load(empty)["flows"] == {"b": {"path": "flows/b"}}
    missing = insert_flow_config("kind: local\n", "b:\n  path: flows/b", "x.yaml")
    assert yaml.safe_load(missing)["flows"] == {"b": {"path": "flows/b"}}
