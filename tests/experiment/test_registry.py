"""Content hashing and registration only when content changed (local registry and the CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from release.cli import main
from release.registry.base import Selection
from release.registry.hashing import content_hash
from release.registry.local import LocalRegistry

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_hash_is_deterministic_and_ignores_caches(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"flow.dag.yaml": b"x", "n/b.py": b"y", "n/c.py": b"z"})
    b = _tree(tmp_path / "b", {"n/c.py": b"z", "n/b.py": b"y", "flow.dag.yaml": b"x"})  # other creation order
    assert content_hash(a) == content_hash(b)
    _tree(a, {"__pycache__/b.cpython-311.pyc": b"junk", ".promptflow/flow.tools.json": b"{}"})
    assert content_hash(a) == content_hash(b)
    (b / "n" / "b.py").rename(b / "n" / "d.py")  # same bytes, another path
    assert content_hash(a) != content_hash(b)


def test_registration_skipped_when_unchanged_and_done_when_one_byte_changed(tmp_path: Path) -> None:
    flow = shutil.copytree(REPO / "flows" / "support_triage", tmp_path / "flow")
    registry = LocalRegistry(tmp_path / "state")
    first = registry.register_flow("support_triage", flow, git_sha="abc")
    assert (first.version, first.created) == ("1", True)
    again = registry.register_flow("support_triage", flow, git_sha="def")
    assert (again.version, again.created, again.content_hash) == ("1", False, first.content_hash)
    data = flow / "data" / "smoke.jsonl"
    data.write_bytes(data.read_bytes().replace(b"twice", b"twicE", 1))  # one byte
    changed = registry.register_flow("support_triage", flow, git_sha="ghi")
    assert (changed.version, changed.created) == ("2", True)
    assert registry.latest("flow", "support_triage") == changed.__class__(
        "flow", "support_triage", "2", changed.content_hash, False, "ghi", {}
    )
    assert (registry.asset_path("flow", "support_triage", "2") / "triage.py").is_file()
    registry.record_selection(
        Selection(
            "support_triage", "2", "examples=extended", {"params": {}}, {"exact_match": 0.5}, "run-1", "ghi"
        )
    )
    baseline = registry.baseline("support_triage")
    assert baseline is not None and baseline.metrics == {"exact_match": 0.5}


def test_register_command_and_gate_regression_against_baseline(exp, capsys) -> None:  # type: ignore[no-untyped-def]
    common = [
        "--flow",
        "support_triage",
        "--env",
        "local",
        "--reports-dir",
        str(exp.reports),
        "--state-dir",
        str(exp.state),
    ]
    selection = exp.reports / "support_triage" / "latest" / "selection.json"
    # the smoke dataset alone: gated on it as asked, but a partial run never changes the release
    assert (
        main(["evaluate", "--dataset", "support_triage_smoke", "--no-progress", "--no-start", *common]) == 0
    )
    out = capsys.readouterr().out
    assert "selection NOT recorded for release: partial evaluation" in out and not selection.exists()
    assert main(["register", *common]) == 0
    registry = json.loads((exp.state / "registry" / "registry.json").read_text())
    assert not registry.get("selections", {}).get("support_triage")  # nothing chosen: no baseline
    # every dataset: recorded, then registered as the baseline
    assert main(["evaluate", "--no-progress", "--no-start", *common]) == 0
    assert f"selection: {selection}" in capsys.readouterr().out
    assert main(["register", *common]) == 0
    out = capsys.readouterr().out
    assert "flow support_triage: unchanged, kept version 1" in out
    assert "data support_triage_full: unchanged, kept version 1" in out
    registry = json.loads((exp.state / "registry" / "registry.json").read_text())
    [chosen] = registry["selections"]["support_triage"]
    assert chosen["flow_version"] == "1" and chosen["metrics"]["exact_match"] > 0
    # a baseline better than anything reachable: significantly worse, the regression check fails
    registry["selections"]["support_triage"][0]["metrics"]["exact_match"] = 1.5
    (exp.state / "registry" / "registry.json").write_text(json.dumps(registry))
    code = main(["gate", *common, "--no-progress", "--no-start"])
    err = capsys.readouterr().err
    assert code == 1
    assert "exact_match" in err and "value 1.5000: significantly worse" in err
    assert "more than tolerance 0.05" in err
