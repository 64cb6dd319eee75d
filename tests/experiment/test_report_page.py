"""report.html: strict metrics, the per-line view, and the page in a real headless Chromium.

The report folders are written by the report module's own writers from runner results built
here (the flows' outputs are made up; the writers, the statistics and the page are real).
Chromium (Debian ``chromium``) is installed by the project's package installer when missing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from release.engine.base import FlowVariant
from release.experiment.evaluate import RunMetrics
from release.experiment.gate import run_gate
from release.experiment.lines import read_lines
from release.experiment.plan import Job
from release.experiment.report import write_html, write_line_outputs, write_metrics
from release.experiment.runner import JobResult, LineRecord
from release.experiment.spec import Experiment
from release.local_env.packages import ensure_binary

LABELS = ("billing", "technical", "account", "shipping")


def _strict(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))


def _evaluation(
    run_dir: Path,
    lines: int,
    variants: dict[str, FlowVariant],
    wrong: dict[str, set[int]],
    failed: dict[str, set[int]],
) -> list[RunMetrics]:
    """Runs and evaluator lines of ``lines`` tickets per variant, written as ``evaluate`` writes them."""
    results: list[JobResult] = []
    rows: list[RunMetrics] = []
    truth = [LABELS[i % 4] for i in range(lines)]
    inputs = [{"ticket": f"ticket number {i} about {truth[i]}"} for i in range(lines)]
    for name, variant in variants.items():
        run_job = Job("run", f"full/{variant.id}", run_dir, variant, "full", inputs, list(range(lines)), name)
        records = []
        for i in range(lines):
            if i in failed[name]:
                records.append(LineRecord(i, inputs[i], None, error="HTTP 500 from the model", attempts=3))
            else:
                label = "billing" if i in wrong[name] and truth[i] != "billing" else truth[i]
                records.append(LineRecord(i, inputs[i], {"category": label}, attempts=1))
        run = JobResult(run_job, records)
        ok = [r for r in records if r.error is None]
        eval_job = Job(
            "eval",
            f"acc/{run_job.name}",
            run_dir,
            FlowVariant(),
            "full",
            [],
            [r.index for r in ok],
            "k",
            reference=run_job.name,
            evaluator="acc",
        )
        scores = [
            LineRecord(r.index, {}, {"accuracy": float((r.outputs or {})["category"] == truth[r.index])})
            for r in ok
        ]
        results += [run, JobResult(eval_job, scores)]
        accuracy = (
            sum(s.outputs["accuracy"] for s in scores if s.outputs) / len(scores) if scores else math.nan
        )
        rows.append(
            RunMetrics(
                variant.id,
                variant,
                "full",
                lines,
                len(failed[name]),
                {"line_success_rate": len(ok) / lines, "accuracy": accuracy},
                ["acc"],
            )
        )
    write_line_outputs(run_dir, results)
    return rows


def _chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = ensure_binary("chromium", log=print)
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def _rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="line[^"]*" data-line="(\d+)"', dom)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("small-report")
    variants = {
        "a": FlowVariant({"prompt": "variant_0"}, {}),
        "b": FlowVariant({"prompt": "variant_1"}, {}),
        "c": FlowVariant({"prompt": "variant_2"}, {}),
    }
    wrong = {"a": {5}, "b": {5, 9, 13}, "c": {5}}
    rows = _evaluation(run_dir, 30, variants, wrong, failed={"a": set(), "b": set(), "c": {21}})
    rows.append(
        _evaluation(
            run_dir / "dead",
            4,
            {"z": FlowVariant({"prompt": "broken"}, {})},
            {"z": set()},
            {"z": {0, 1, 2, 3}},
        )[0]
    )
    summary = {"flow": "t", "experiment_run": "r1", "kind": "evaluation", "contamination": []}
    write_metrics(run_dir, rows, summary)
    experiment = Experiment.model_validate(
        {"name": "t", "datasets": [{"name": "full", "source": "f.jsonl"}], "primary_metric": "accuracy"}
    )
    outcome = run_gate(experiment, rows[:3], None, lines=read_lines(run_dir))
    write_html(run_dir, "t: evaluation r1", rows, summary, None, outcome)
    return run_dir


def test_metrics_are_strict_json_with_intervals_and_no_nan_for_a_variant_without_lines(small: Path) -> None:
    data = _strict((small / "metrics.json").read_text())
    runs = {r["variant_id"]: r for r in data["runs"]}
    dead = runs["prompt=broken"]
    assert dead["metrics"] == {"line_success_rate": 0.0, "accuracy": None}  # 0 successful lines
    assert dead["intervals"] == {}  # nothing to resample
    a = runs["prompt=variant_0"]["intervals"]["accuracy"]
    assert a["n"] == 30 and a["mean"] == pytest.approx(29 / 30)
    assert a["low"] < a["mean"] <= a["high"] == 1.0
    page = (small / "report.html").read_text()
    assert "NaN" not in page and "nan" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert "n/a" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # one file: nothing fetched
    csv_head = (small / "metrics.csv").read_text().splitlines()[0]
    assert "accuracy_ci_low" in csv_head and "nan" not in (small / "metrics.csv").read_text().lower()


def test_report_page_in_headless_chromium(small: Path, tmp_path: Path) -> None:
    page = small / "report.html"
    dom = _chromium(page.as_uri(), tmp_path, "--dump-dom").stdout
    shown = _rows(dom)
    assert len(shown) == 30  # every line of the dataset, on one page
    # failed and disagreeing first: 9, 13 (V2 wrong), 21 (V3 failed), then 5 (all wrong alike)
    assert shown[:4] == ["9", "13", "21", "5"]
    assert shown[4:] == [str(i) for i in range(30) if i not in (5, 9, 13, 21)]
    assert "lines 1\u201330 of 30" in dom
    assert "error: HTTP 500 from the model" in dom
    assert "Gate: <span" in dom and "chosen vs runner-up" in dom and "McNemar" in dom
    assert "Tie: 2 variants are not significantly different" in dom  # 29/30 vs 27/30: p = 0.5
    # the summary metric links open the metric's lines, lowest first; filters and search work
    link = re.search(r'href="(#lines\?ds=full&amp;metric=accuracy&amp;variant=prompt%3Dvariant_1)"', dom)
    assert link is not None
    sorted_dom = _chromium(page.as_uri() + link.group(1).replace("&amp;", "&"), tmp_path, "--dump-dom").stdout
    assert _rows(sorted_dom)[:3] == ["9", "13", "5"] and "sorted by accuracy of V2" in sorted_dom
    failed = _rows(_chromium(page.as_uri() + "#lines?ds=full&failed=1", tmp_path, "--dump-dom").stdout)
    assert sorted(failed, key=int) == ["5", "9", "13", "21"]
    found = _rows(
        _chromium(page.as_uri() + "#lines?ds=full&q=ticket%20number%2017%20", tmp_path, "--dump-dom").stdout
    )
    assert found == ["17"]
    shot = tmp_path / "report.png"
    _chromium(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1300,2400")
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("GENAIOPS_KEEP_SCREENSHOT")  # a path: keep the picture to look at
    if keep:
        shutil.copyfile(shot, keep)


@pytest.mark.slow
def test_ten_thousand_lines_stay_a_few_megabytes_and_render_one_page(tmp_path: Path) -> None:
    run_dir = tmp_path / "big"
    run_dir.mkdir()
    variants = {"a": FlowVariant({"prompt": "variant_0"}, {}), "b": FlowVariant({"prompt": "variant_1"}, {})}
    wrong = {"a": set(range(0, 10_000, 7)), "b": set(range(0, 10_000, 5))}
    rows = _evaluation(run_dir, 10_000, variants, wrong, {"a": set(), "b": {42}})
    write_metrics(run_dir, rows, {"flow": "t"})
    page = write_html(run_dir, "t: 10,000 lines", rows, {"flow": "t"}, None)
    size = page.stat().st_size
    assert size < 5_000_000, f"{size} bytes"
    data = re.search(r'<script type="application/json" id="line-data">(.*?)</script>', page.read_text(), re.S)
    assert data is not None and len(json.loads(data.group(1))["datasets"][0]["rows"]) == 10_000
    dom = _chromium(page.as_uri(), tmp_path, "--dump-dom").stdout
    assert len(_rows(dom)) == 100  # one page of DOM rows, not 10,000
    assert "lines 1\u2013100 of 10000, page 1 of 100" in dom
    last = _chromium(page.as_uri() + "#lines?ds=full&page=100", tmp_path, "--dump-dom").stdout
    assert len(_rows(last)) == 100 and "lines 9901\u201310000 of 10000" in last
