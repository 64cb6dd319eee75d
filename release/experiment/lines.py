"""Per-line results of one evaluation, read back from its report folder, and per-line metric scores.

A report folder holds ``runs/<dataset>/<variant>/outputs.jsonl`` (the flow's line outputs) and
``evaluations/<evaluator>/<dataset>/<run>/outputs.jsonl`` (each evaluator's line outputs), each
with a ``run.json`` naming the variant and dataset (:func:`release.experiment.report.write_line_outputs`).

A metric's *per-line scores* are what the bootstrap and the paired tests resample:

1. ``line_success_rate``: 1 for a line that ran, 0 for a line that failed (every line).
2. an evaluator line output with the metric's own name whose values are numbers or booleans
   (the convention of prompt flow evaluators and of ``azure-ai-evaluation``), or else
3. the first evaluator line output whose values read as numbers (numbers, booleans, or words such
   as ``Correct``/``Incorrect``, ``true``/``false``, ``pass``/``fail``) and whose mean is the metric;
   outputs sharing a ``_``-separated name part with the metric are tried first.

In cases 2 and 3 the scores' mean must equal the aggregated metric (to 5e-4: evaluators often round
to 4 places); a metric that is not a mean of line scores (a median, an F1 over all lines) has no
per-line scores, and so no interval: the report says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from release.experiment.stats import Interval, bootstrap_interval, finite

if TYPE_CHECKING:
    from release.experiment.evaluate import RunMetrics

MEAN_TOLERANCE = 5e-4
POSITIVE = frozenset({"correct", "true", "yes", "pass", "passed", "match", "1"})
NEGATIVE = frozenset({"incorrect", "false", "no", "fail", "failed", "mismatch", "0"})


@dataclass
class DatasetLines:
    """Every variant's lines of one dataset: inputs, outputs, errors and evaluator line outputs."""

    dataset: str
    variants: list[str] = field(default_factory=list)
    inputs: dict[int, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[int, Any]] = field(default_factory=dict)  # variant -> line -> outputs
    errors: dict[str, dict[int, str | None]] = field(default_factory=dict)
    scores: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # evaluator outputs

    @property
    def indices(self) -> list[int]:
        return sorted(self.inputs)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.strip():
            out.append(json.loads(text))
    return out


def read_lines(report_dir: Path) -> dict[str, DatasetLines]:
    """dataset -> its lines, from the report folder (empty when the folder has no line files)."""
    found: dict[str, DatasetLines] = {}
    for run_file in sorted(report_dir.glob("runs/*/*/run.json")):
        meta = json.loads(run_file.read_text(encoding="utf-8"))
        data = found.setdefault(meta["dataset"], DatasetLines(meta["dataset"]))
        variant = meta["variant"]
        if variant not in data.variants:
            data.variants.append(variant)
        outputs = data.outputs.setdefault(variant, {})
        errors = data.errors.setdefault(variant, {})
        for line in _read_jsonl(run_file.parent / "outputs.jsonl"):
            index = int(line["line"])
            data.inputs.setdefault(index, line.get("inputs") or {})
            outputs[index] = line.get("outputs")
            errors[index] = line.get("error")
    for run_file in sorted(report_dir.glob("evaluations/*/*/*/run.json")):
        meta = json.loads(run_file.read_text(encoding="utf-8"))
        reference = str(meta.get("reference") or meta["name"].split("/", 1)[1])
        variant = meta.get("run_variant") or reference.split("/", 1)[1]
        evaluated = found.get(meta["dataset"])
        if evaluated is None or variant not in evaluated.outputs:
            continue
        scores = evaluated.scores.setdefault(variant, {})
        for line in _read_jsonl(run_file.parent / "outputs.jsonl"):
            if line.get("error") is None and isinstance(line.get("outputs"), dict):
                scores.setdefault(int(line["line"]), {}).update(line["outputs"])
    return found


def as_number(value: Any) -> float | None:
    """A line output read as a score: finite numbers, booleans, or a pass/fail word; else None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    number = finite(value)
    if number is not None:
        return number
    if isinstance(value, str):
        word = value.strip().lower()
        if word in POSITIVE:
            return 1.0
        if word in NEGATIVE:
            return 0.0
    return None


@dataclass(frozen=True)
class LineScores:
    """The per-line scores of one metric for one variant on one dataset, and where they come from."""

    scores: dict[int, float]  # line -> score
    source: str  # "line ran" | "evaluator output 'grade'" ...


def metric_scores(
    data: DatasetLines, variant: str, metric: str, aggregate: float | None
) -> LineScores | None:
    """The per-line scores of ``metric`` (see the module docstring), or None when there are none."""
    if metric == "line_success_rate":
        errors = data.errors.get(variant, {})
        if not errors:
            return None
        return LineScores(
            {i: 0.0 if e is not None else 1.0 for i, e in errors.items()}, "line ran (1) or failed (0)"
        )
    lines = data.scores.get(variant, {})
    if not lines:
        return None
    keys: list[str] = []
    for outputs in lines.values():
        keys += [k for k in outputs if k not in keys]
    if metric in keys:
        keys = [metric]
    elif aggregate is None:
        return None
    else:  # outputs that share a name part with the metric first (evidence_grade for evidence_accuracy)
        parts = set(metric.split("_"))
        keys.sort(key=lambda k: -len(parts & set(k.split("_"))))
    for key in keys:
        values: dict[int, float] = {}
        for index, outputs in lines.items():
            value = outputs.get(key)
            number = as_number(value)
            if number is None or (key == metric and isinstance(value, str)):
                values = {}
                break
            values[index] = number
        if not values:
            continue
        mean = sum(values.values()) / len(values)
        if aggregate is not None and not math.isclose(mean, aggregate, abs_tol=MEAN_TOLERANCE):
            continue
        source = f"evaluator line output {key!r}"
        return LineScores(dict(sorted(values.items())), source)
    return None


def metric_intervals(
    rows: list[RunMetrics], lines: dict[str, DatasetLines]
) -> dict[tuple[str, str, str], Interval]:
    """(variant, dataset, metric) -> the metric's 95 % bootstrap interval, for every quality metric
    with per-line scores (and at least 2 scored lines)."""
    from release.experiment.gate import is_quality_metric

    out: dict[tuple[str, str, str], Interval] = {}
    for row in rows:
        data = lines.get(row.dataset)
        if data is None:
            continue
        for name, value in row.metrics.items():
            aggregate = finite(value)
            if aggregate is None or not is_quality_metric(name):
                continue
            scores = metric_scores(data, row.variant_id, name, aggregate)
            interval = None if scores is None else bootstrap_interval(list(scores.scores.values()))
            if interval is not None:
                out[(row.variant_id, row.dataset, name)] = interval
    return out
