"""Small flow folders for the prompt-flow compatibility tests, written into a temporary folder.

``classify``: a DAG flow (python node) labelling a text ``long`` / ``short`` by its length, no
model needed; ``grade``: a DAG evaluator with an aggregation node logging ``accuracy``. ``write``
lays out any extra files given as ``{relative path: text}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLASSIFY_DAG = """\
inputs:
  text:
    type: string
outputs:
  label:
    type: string
    reference: ${classify.output}
nodes:
- name: classify
  type: python
  source:
    type: code
    path: classify.py
  inputs:
    text: ${inputs.text}
"""

CLASSIFY_PY = """\
from promptflow.core import tool


@tool
def classify(text: str) -> str:
    return "long" if len(text) > 20 else "short"
"""

GRADE_DAG = """\
inputs:
  groundtruth:
    type: string
  prediction:
    type: string
  source:
    type: string
    default: ""
outputs:
  grade:
    type: string
    reference: ${grade.output}
nodes:
- name: grade
  type: python
  source:
    type: code
    path: grade.py
  inputs:
    groundtruth: ${inputs.groundtruth}
    prediction: ${inputs.prediction}
    source: ${inputs.source}
- name: accuracy
  type: python
  source:
    type: code
    path: accuracy.py
  inputs:
    grades: ${grade.output}
  aggregation: true
"""

GRADE_PY = """\
from promptflow.core import tool


@tool
def grade(groundtruth: str, prediction: str, source: str = "") -> str:
    return "correct" if groundtruth == prediction else "wrong"
"""

ACCURACY_PY = """\
from promptflow.core import log_metric, tool


@tool
def accuracy(grades: list) -> dict:
    value = round(sum(g == "correct" for g in grades) / len(grades), 4)
    log_metric("accuracy", value)
    return {"accuracy": value}
"""

LINES = [
    {"text": "hi", "label": "short"},
    {"text": "a much longer sentence than twenty characters", "label": "long"},
    {"text": "ok then", "label": "short"},
]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def classify_case(root: Path, experiment: str, extra: dict[str, str] | None = None) -> Path:
    """A use case folder: flow/ (classify), evaluation/ (grade + accuracy), data/lines.jsonl and
    ``experiment`` as experiment.yaml; returns the experiment file."""
    write(
        root,
        {
            "flow/flow.dag.yaml": CLASSIFY_DAG,
            "flow/classify.py": CLASSIFY_PY,
            "evaluation/flow.dag.yaml": GRADE_DAG,
            "evaluation/grade.py": GRADE_PY,
            "evaluation/accuracy.py": ACCURACY_PY,
            "data/lines.jsonl": jsonl(LINES),
            "experiment.yaml": experiment,
            **(extra or {}),
        },
    )
    return root / "experiment.yaml"


def experiment_yaml(source: str = "data/lines.jsonl", eval_mappings: str = "", name: str = "compat") -> str:
    """An experiment over ``source`` with the ``acc`` evaluator; ``eval_mappings`` adds mapping lines."""
    return f"""\
name: {name}
flow: flow
datasets:
- name: lines
  source: {source}
  mappings:
    text: "${{data.text}}"
evaluators:
- name: acc
  flow: evaluation
  datasets:
  - name: lines_eval
    reference: lines
    source: {source}
    mappings:
      groundtruth: "${{data.label}}"
      prediction: "${{run.outputs.label}}"
{eval_mappings}primary_metric: accuracy
gates:
  thresholds:
    accuracy: {{min: 0.9}}
"""
