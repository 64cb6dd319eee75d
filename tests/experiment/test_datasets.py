"""Datasets are read the way prompt flow reads them (issue 12, kind 1).

prompt flow's own reader (``promptflow._utils.load_data``) is the oracle for the formats it reads;
the stricter checks (ragged rows, missing columns) must name the data file and the line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from release.cli import main
from release.engine import get_engine
from release.experiment.datasets import DatasetError, json_lines, read_dataset
from release.experiment.plan import build_plan
from release.experiment.spec import ExperimentError, load_experiment
from tests.experiment.cases import LINES, classify_case, experiment_yaml, jsonl, write


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return get_engine(tmp_path_factory.mktemp("pf"))


def _promptflow_rows(path: Path) -> list[dict[str, object]]:
    from promptflow._utils.load_data import load_data

    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in load_data(str(path))
    ]


CSV = 'text,label\nhi,short\n"a much longer sentence than twenty characters",long\nok then,short\n'


def test_case_03_csv_dataset_is_accepted_and_planned_like_prompt_flow(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """Case 03 (promptflow#2297): a CSV dataset with a header runs; lines as prompt flow reads them."""
    path = classify_case(tmp_path, experiment_yaml("data/lines.csv"), {"data/lines.csv": CSV})
    plan = build_plan(load_experiment(path), engine, flow_name="compat")
    assert plan.rows["lines"] == _promptflow_rows(tmp_path / "data" / "lines.csv")
    assert [job.inputs for job in plan.runs] == [[{"text": r["text"]} for r in LINES]]


def test_csv_evaluation_runs_end_to_end(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = classify_case(tmp_path / "case", experiment_yaml("data/lines.csv"), {"data/lines.csv": CSV})
    code = main(exp.args("evaluate", "compat", "--experiment", str(path)))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "gate passed" in out.out
    metrics = json.loads(next(exp.reports.rglob("metrics.json")).read_text())
    assert metrics["runs"][0]["lines"] == 3 and metrics["runs"][0]["metrics"]["accuracy"] == 1.0


def test_jsonl_record_ends_only_at_newline(tmp_path: Path) -> None:
    """U+2028, U+2029, U+0085 and \\x1c inside strings are data (str.splitlines would cut there)."""
    texts = ["first\u2028second", "para\u2029graph", "next\u0085line", "file\x1csep", "plain"]
    path = write(tmp_path, {"d.jsonl": jsonl([{"text": t} for t in texts]) + "\n\n"}) / "d.jsonl"
    rows = read_dataset(path).rows
    assert [r["text"] for r in rows] == texts
    assert rows == _promptflow_rows(path)
    assert [n for n, _ in json_lines("{}\r\n\n{}\u2028\n")] == [1, 3]


def test_tsv_json_unknown_suffix_and_folder_read_like_prompt_flow(tmp_path: Path) -> None:
    tsv = 'text\tlabel\nhi, there\tshort\n"tab\tinside"\tlong\nempty\t\n'
    files = {
        "d.tsv": tsv,
        "d.json": json.dumps([{"text": "a", "n": 1}, {"text": "b", "n": 2}]),
        "d.txt": jsonl([{"text": "x"}]),
        "columns.json": json.dumps({"text": {"0": "a", "1": "b"}, "label": {"0": "x", "1": "y"}}),
    }
    write(tmp_path, files)
    for name in files:
        rows = read_dataset(tmp_path / name).rows
        assert rows == _promptflow_rows(tmp_path / name), name
    assert read_dataset(tmp_path / "d.tsv").rows[2] == {"text": "empty", "label": ""}
    folder = write(tmp_path / "folder", {"a.jsonl": jsonl([{"text": "1"}]), "sub/b.csv": "text\n2\n"})
    assert [r["text"] for r in read_dataset(folder).rows] == ["1", "2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("text,label\nhi,short\nok,short,extra\n", "d.csv: line 3: expected 2 fields, saw 3"),
        ("text,label\nhi,short\n\nalone\n", "d.csv: line 4: expected 2 fields, saw 1"),
        ('text,label\n"multi\nline",short\nx\n', "d.csv: line 4: expected 2 fields, saw 1"),
        ("text,text\nhi,short\n", "d.csv: line 1: duplicate column name(s) ['text']"),
    ],
)
def test_ragged_csv_rows_name_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, {"d.csv": text}) / "d.csv"
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "d.jsonl",
            '{"text": "a"}\n[1, 2]\n',
            "d.jsonl: line 2: each JSON Lines record must be a JSON object",
        ),
        ("d.jsonl", '{"text": "a"}\n{"text": \n', "d.jsonl: line 2: not a JSON Lines record"),
        ("d.jsonl", "\n\n", "d.jsonl: the dataset has no records"),
        ("d.json", '{"text": "a"}', "d.json: a .json dataset must be an array of objects"),
    ],
)
def test_malformed_records_name_file_and_line(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path, {name: text}) / name
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert expected in str(info.value)


def test_parquet_without_pyarrow_says_how_to_convert(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401

        pytest.skip("pyarrow is installed here: parquet is read")
    except ImportError:
        pass
    path = write(tmp_path, {"d.parquet": "PAR1"}) / "d.parquet"
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert "pyarrow" in str(info.value) and "JSON Lines" in str(info.value)


def test_a_ragged_csv_stops_the_experiment_before_any_run(exp, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = classify_case(
        tmp_path / "case", experiment_yaml("data/lines.csv"), {"data/lines.csv": CSV + "no label\n"}
    )
    before = exp.services.completions()
    code = main(exp.args("experiment", "compat", "--experiment", str(path)))
    err = capsys.readouterr().err
    assert code == 2
    assert "datasets[0].source" in err and "lines.csv: line 5: expected 2 fields, saw 1" in err
    assert exp.services.completions() == before and not exp.reports.exists()


def test_missing_file_error_is_unchanged(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    path = classify_case(tmp_path, experiment_yaml("data/nope.csv"))
    with pytest.raises(ExperimentError) as info:
        build_plan(load_experiment(path), engine, flow_name="compat")
    assert "datasets[0].source: dataset file" in str(info.value)
