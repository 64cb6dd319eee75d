"""`genaiops flow-changed`: the per-flow path filters against a real git history."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from release.cli import main
from release.errors import UserError
from release.scaffold import changes


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "development")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    for path in ("flows/a/flow.dag.yaml", "flows/ab/flow.dag.yaml", "release/engine/x.py", "docs/x.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    return tmp_path


def commit(repo: Path, path: str) -> None:
    (repo / path).write_text("v2\n")
    git(repo, "commit", "-q", "-am", f"change {path}")


def test_only_the_flow_under_the_filter_is_touched(repo: Path) -> None:
    commit(repo, "flows/ab/flow.dag.yaml")
    files = changes.changed_files("development", repo)
    assert files == ["flows/ab/flow.dag.yaml"]
    assert changes.touched(files, ["flows/a"]) == []  # a prefix of the name is not the folder
    assert changes.touched(files, ["flows/ab"]) == files
    assert changes.touched(files, changes.split_paths("flows/a, release/engine,,")) == []


def test_shared_paths_and_globs_touch_every_flow(repo: Path) -> None:
    commit(repo, "release/engine/x.py")
    files = changes.changed_files("development", repo)
    assert changes.touched(files, ["flows/a", "release/engine"]) == ["release/engine/x.py"]
    assert changes.touched(files, ["release/*/x.py"]) == ["release/engine/x.py"]
    commit(repo, "docs/x.md")
    assert changes.touched(changes.changed_files("development", repo), ["flows/a"]) == []


def test_an_unknown_base_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(UserError, match="fetch-depth: 0"):
        changes.changed_files("origin/nowhere", repo)


def test_cli_emits_for_azure_devops_and_github(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # against this repository: nothing changed between HEAD and HEAD
    assert main(["flow-changed", "--flow", "web_classification", "--base", "HEAD", "--emit", "azure"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "##vso[task.setvariable variable=FLOW_TOUCHED]false"
    # no base (dev and prod pipelines): the flow counts as touched
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["flow-changed", "--flow", "support_triage", "--emit", "github"]) == 0
    assert output.read_text() == "touched=true\n"
    assert main(["flow-changed", "--flow", "no_such_flow", "--base", "HEAD"]) == 2
    assert "flows.no_such_flow: no such flow" in capsys.readouterr().err
