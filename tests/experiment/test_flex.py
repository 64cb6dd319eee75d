"""Flex flows run as prompt flow runs them (issue 12, kind 3).

Function or class entries, sync or async, ``__call__`` possibly inherited; outputs (dict,
dataclass, single value) stored as prompt flow's batch engine stores them and served as prompt
flow's server answers them. prompt flow's own executor and serializer are the oracle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from release.cli import main
from release.engine import get_engine
from release.engine.base import FlowVariant
from release.experiment.plan import build_plan
from release.experiment.spec import load_experiment
from release.local_env.net import free_port
from tests.experiment.cases import LINES, jsonl, write

LABELER = '''\
"""A flex flow without a model whose entry is async."""

import asyncio


class Labeler:
    def __init__(self, threshold: int = 20) -> None:
        self.threshold = int(threshold)

    async def __call__(self, text: str) -> dict:
        await asyncio.sleep(0)
        return {"label": "long" if len(text) > self.threshold else "short", "length": len(text)}
'''

GRADER = """\
class Grader:
    def __call__(self, groundtruth: str, prediction: str) -> dict:
        return {"correct": groundtruth == prediction}

    def __aggregate__(self, line_results: list) -> dict:
        return {"accuracy": sum(1 for r in line_results if r.correct) / len(line_results)}
"""

CASE_06 = {
    "flow/labeler.py": LABELER,
    "flow/flow.flex.yaml": "entry: labeler:Labeler\ninit:\n  threshold:\n    type: int\n    default: 20\n",
    "evaluation/grader.py": GRADER,
    "evaluation/flow.flex.yaml": "entry: grader:Grader\n",
    "data/lines.jsonl": jsonl(LINES),
    "experiment.yaml": """\
name: flex_async
flow: flow
datasets:
- name: lines
  source: data/lines.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: evaluation
  datasets:
  - name: lines_eval
    reference: lines
    source: data/lines.jsonl
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.label}"
primary_metric: accuracy
gates:
  thresholds:
    accuracy: {min: 0.9}
""",
}

# an async __call__ inherited from a base class in another module, returning a dataclass
INHERITED = {
    "base.py": """\
import asyncio
import dataclasses


@dataclasses.dataclass
class Verdict:
    label: str
    length: int
    tags: tuple


class BaseLabeler:
    threshold = 20

    async def __call__(self, text: str, suffix: str = "") -> Verdict:
        await asyncio.sleep(0)
        return Verdict("long" if len(text) > self.threshold else "short", len(text + suffix), ("a", "b"))
""",
    "entry.py": "from base import BaseLabeler\n\n\nclass Labeler(BaseLabeler):\n    pass\n",
    "flow.flex.yaml": "entry: entry:Labeler\n",
}

FUNCTIONS = {
    "funcs.py": """\
import asyncio


async def label_async(text: str) -> str:
    await asyncio.sleep(0)
    return "long" if len(text) > 20 else "short"


def length(text: str) -> int:
    return len(text)
""",
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return get_engine(tmp_path_factory.mktemp("pf"))


def test_case_06_async_class_entry_is_accepted_and_evaluated(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Case 06 (promptflow#2569, #2226): a class entry with ``async def __call__``."""
    root = write(tmp_path / "case", CASE_06)
    plan = build_plan(load_experiment(root / "experiment.yaml"), get_engine(exp.state / "pf"), flow_name="c")
    assert plan.info.inputs == ["text"] and plan.info.outputs is None  # `-> dict`: known when it runs
    code = main(exp.args("evaluate", "flex_async", "--experiment", str(root / "experiment.yaml")))
    out = capsys.readouterr()
    assert code == 0, out.err
    outputs = next(exp.reports.rglob("runs/lines/*/outputs.jsonl")).read_text().splitlines()
    assert json.loads(outputs[0])["outputs"] == {"label": "short", "length": 2}
    metrics = json.loads(next(exp.reports.rglob("metrics.json")).read_text())
    assert metrics["runs"][0]["metrics"]["accuracy"] == 1.0


def _promptflow_batch_output(flow_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """What prompt flow's batch engine writes for one line (its executor + its serializer)."""
    from promptflow._utils.dataclass_serializer import convert_dataclass_to_dict
    from promptflow.executor import FlowExecutor

    executor = FlowExecutor.create(flow_dir / "flow.flex.yaml", {}, working_dir=flow_dir)
    output = convert_dataclass_to_dict(executor.exec_line(inputs, index=0).output)
    line = {**output} if isinstance(output, dict) else {"output": output}
    line.pop("line_number", None)
    return json.loads(json.dumps(line))


@pytest.mark.parametrize(
    ("files", "entry", "inputs", "single"),
    [
        (INHERITED, None, ["text", "suffix"], False),
        (FUNCTIONS, "funcs:label_async", ["text"], True),
        (FUNCTIONS, "funcs:length", ["text"], True),
    ],
)
def test_entries_and_outputs_match_prompt_flow(tmp_path: Path, engine, files, entry, inputs, single) -> None:  # type: ignore[no-untyped-def]
    flow = write(tmp_path / "flow", {**files, **({"flow.flex.yaml": f"entry: {entry}\n"} if entry else {})})
    info = engine.describe(flow)
    assert info.inputs == inputs
    session = engine.open(flow, FlowVariant(), [])
    line = session.run_line({"text": "a much longer sentence than twenty characters"}, 0)
    assert line.single_output is single
    assert line.outputs == _promptflow_batch_output(
        flow, {"text": "a much longer sentence than twenty characters"}
    )
    if not single:
        assert line.outputs == {"label": "long", "length": 45, "tags": ["a", "b"]}


SERVED = {
    "shapes.py": """\
import dataclasses


@dataclasses.dataclass
class Answer:
    label: str
    scores: tuple


class Entry:
    def __call__(self, text: str, shape: str = "dataclass"):
        if shape == "dataclass":
            return Answer("short" if len(text) < 20 else "long", (0.5, 1))
        if shape == "text":
            return "short"
        return {"label": "short", "n": 1}
""",
    "flow.flex.yaml": "entry: shapes:Entry\n",
}


def _post(port: int, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_dataclass_and_single_value_outputs_served_as_prompt_flow_serves_them(tmp_path: Path) -> None:
    """The real serving app (subprocess) answers as prompt flow's server: the dataclass's fields,
    the single value itself, the dict as is."""
    flow = write(tmp_path / "flow", SERVED)
    manifest = tmp_path / "serving.json"
    manifest.write_text(json.dumps({"flow_dir": str(flow), "connections": []}))
    port = free_port()
    env = {
        **os.environ,
        "GENAIOPS_SERVING_MANIFEST": str(manifest),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "1",
        "PF_HOME_DIRECTORY": str(tmp_path / "pf"),
    }
    env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "release.serving"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "server not healthy after 90 s"
                time.sleep(0.3)
        assert _post(port, {"text": "hi"}) == {"label": "short", "scores": [0.5, 1]}
        assert _post(port, {"text": "hi", "shape": "text"}) == "short"
        assert _post(port, {"text": "hi", "shape": "dict"}) == {"label": "short", "n": 1}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_flex_aggregation_gets_attribute_dicts_and_single_values(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    flow = write(
        tmp_path / "agg",
        {
            "agg.py": """\
class Score:
    def __call__(self, text: str, mode: str = "dict"):
        return {"n": len(text)} if mode == "dict" else len(text)

    def __aggregate__(self, results: list) -> dict:
        return {"total": sum(r.n if isinstance(r, dict) else r for r in results)}
""",
            "flow.flex.yaml": "entry: agg:Score\n",
        },
    )
    session = engine.open(flow, FlowVariant(), [])
    for mode in ("dict", "single"):
        inputs = [{"text": "ab", "mode": mode}, {"text": "abc", "mode": mode}]
        lines = [session.run_line(i, n) for n, i in enumerate(inputs)]
        assert session.aggregate(inputs, lines) == {"total": 5.0}
