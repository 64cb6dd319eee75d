"""Contamination: flow text found in the evaluation datasets, planted here; the shipped flows are clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from release.config import REPO_ROOT, load_config
from release.experiment.contamination import check_experiment, find_hits, normalize, similarity
from release.experiment.spec import load_experiment
from release.scaffold.generator import KINDS, render

ROWS = [
    {"ticket": "Please delete my account and all personal data", "category": "account"},
    {"ticket": "The parcel arrived crushed and two plates are broken", "category": "shipping"},
    {"ticket": "Why does the export button do nothing in my browser?", "category": "technical"},
]


def _flow(tmp_path: Path, prompt: str, code: str) -> Path:
    flow = tmp_path / "flow"
    (flow / "evaluation").mkdir(parents=True)
    (flow / "prompt.jinja2").write_text(prompt)
    (flow / "examples.py").write_text(code)
    # an evaluator may quote the data: it is not the flow
    (flow / "evaluation" / "grade.py").write_text(f"EXPECTED = {ROWS[2]['ticket']!r}\n")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return flow


def test_planted_examples_are_found_exactly_and_nearly(tmp_path: Path) -> None:
    flow = _flow(
        tmp_path,
        prompt="# system:\nClassify the ticket.\n{% for ex in examples %}{{ex}}{% endfor %}\n"
        "Ticket: The parcel ARRIVED crushed, and two plates are broken!\nOUTPUT: shipping\n"
        "Ticket: {{ticket}}\n",
        code='SHOTS = [\n    ("Delete my account and my personal data please", "account"),\n'
        '    ("My invoice shows the wrong VAT number", "billing"),\n]\n',
    )
    hits = find_hits(flow, [("full", tmp_path / "data.jsonl", ROWS)], exclude=[flow / "evaluation"])
    found = {(h.kind, h.flow_file, h.flow_line, h.dataset_line, h.column) for h in hits}
    assert found == {
        ("exact", "prompt.jinja2", 4, 2, "ticket"),  # case and punctuation do not hide a copy
        ("near", "examples.py", 2, 1, "ticket"),  # reordered words
    }
    [near] = [h for h in hits if h.kind == "near"]
    assert near.similarity == pytest.approx(1.0)  # every word of the dataset line is in the example
    assert "examples.py:2" in near.describe() and "data.jsonl:1" in near.describe()


def test_measures() -> None:
    assert normalize("  The Parcel,\u00a0ARRIVED!  ") == "the parcel arrived"
    a = ("the", "export", "button", "does", "nothing")
    assert similarity(a, a) == 1.0
    assert similarity(a, ("my", "invoice", "shows", "the", "wrong", "vat")) < 0.6


def test_unrelated_text_is_no_hit(tmp_path: Path) -> None:
    flow = _flow(
        tmp_path,
        prompt="Ticket: The courier left the box at the wrong house number\nTicket: {{ticket}}\n",
        code='SHOTS = [("Is VAT included in the subscription price", "billing")]\n',
    )
    assert find_hits(flow, [("full", tmp_path / "data.jsonl", ROWS)], exclude=[flow / "evaluation"]) == []


@pytest.mark.parametrize("flow", sorted(load_config("local").flows))
def test_the_shipped_flows_are_clean(flow: str) -> None:
    settings = load_config("local").flows[flow]
    experiment = load_experiment(REPO_ROOT / settings.path / settings.experiment, "local")
    assert check_experiment(experiment) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_scaffolded_flows_are_clean(kind: str, tmp_path: Path) -> None:
    for relative, text in render(kind, "demo", "A demo flow.").items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    experiment = load_experiment(tmp_path / "experiment.yaml", "local")
    assert check_experiment(experiment) == []
