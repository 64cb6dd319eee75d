"""Reports under ``reports/<flow>/<experiment-run>/``: report.html, metrics.csv, metrics.json, line outputs.

Every experiment run gets a new folder (created exclusively), and each run's line outputs live in
``runs/<dataset>/<variant>/outputs.jsonl``: nothing is overwritten between datasets or runs.

* metrics.json is strict JSON (RFC 8259): a metric that is NaN or infinite is written as ``null``.
  Each run has ``intervals``: metric -> 95 % bootstrap interval (:mod:`release.experiment.stats`).
* report.html is one self-contained file (inline CSS, SVG charts and plain JS; no CDN): summary
  with intervals, gate verdict with the paired tests, contamination hits, charts, and the per-line
  view (every line's inputs, each variant's outputs and scores side by side; the lines are embedded
  as JSON and rendered 100 per page). docs/reading-reports.md explains every part.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import json
import math
import re
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

from release.experiment.cost import COST_LATENCY_KEYS
from release.experiment.evaluate import RunMetrics
from release.experiment.gate import GateOutcome, is_quality_metric
from release.experiment.lines import NEGATIVE, POSITIVE, DatasetLines, as_number, metric_intervals, read_lines
from release.experiment.runner import JobResult
from release.experiment.stats import Interval, finite
from release.registry.base import Selection

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5")
PAGE_SIZE = 100
MAX_CELL_CHARS = 400  # longer strings are cut in the page (the full text is in outputs.jsonl)
LINES_JS = Path(__file__).resolve().parent.parent / "templates" / "report_lines.js"
FAILED, DISAGREE = 1, 2


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def make_run_dir(reports_dir: Path, flow: str) -> tuple[str, Path]:
    for _ in range(10):
        run_id = new_run_id()
        path = reports_dir / flow / run_id
        try:
            path.mkdir(parents=True, exist_ok=False)
            return run_id, path
        except FileExistsError:
            continue
    raise RuntimeError("could not make a unique report folder")  # pragma: no cover


def slug(text: str) -> str:
    short = _SAFE.sub("_", text)[:60]
    return f"{short}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def write_line_outputs(run_dir: Path, results: list[JobResult]) -> None:
    for result in results:
        job = result.job
        sub = "runs" if job.kind == "run" else f"evaluations/{job.evaluator}"
        target = (
            run_dir / sub / job.dataset / slug(job.variant.id if job.kind == "run" else str(job.reference))
        )
        target.mkdir(parents=True, exist_ok=False)
        with (target / "outputs.jsonl").open("x", encoding="utf-8") as out:
            for line in result.lines:
                out.write(
                    json.dumps(
                        {
                            "line": line.index,
                            "inputs": line.inputs,
                            "outputs": line.outputs,
                            "error": line.error,
                            "attempts": line.attempts,
                            "cached": line.cached,
                        },
                        default=str,
                    )
                    + "\n"
                )
        (target / "run.json").write_text(
            json.dumps(
                {
                    "name": job.name,
                    "kind": job.kind,
                    "evaluator": job.evaluator,
                    "reference": job.reference,
                    "dataset": job.dataset,
                    "variant": job.variant.id,
                    "cache_key": job.key,
                    "lines": len(result.lines),
                    "failed": len(result.failed),
                    "cached_lines": result.cached_lines,
                    "metrics": strict_json(result.metrics),
                },
                indent=2,
                allow_nan=False,
            ),
            encoding="utf-8",
        )


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def metric_names(rows: list[RunMetrics]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for name in row.metrics:
            if name not in names:
                names.append(name)
    return names


def _cell(value: Any) -> Any:
    number = finite(value)
    return "" if number is None else number


def write_metrics(run_dir: Path, rows: list[RunMetrics], summary: dict[str, Any]) -> None:
    """metrics.csv (one row per variant x dataset; ``<metric>_ci_low``/``_ci_high`` columns) and
    metrics.json (strict JSON; each run with its ``intervals``)."""
    names = metric_names(rows)
    costs = [k for k in COST_LATENCY_KEYS if any(k in row.cost_latency for row in rows)]
    intervals = metric_intervals(rows, read_lines(run_dir))
    with_ci = [n for n in names if any(key[2] == n for key in intervals)]
    with (run_dir / "metrics.csv").open("x", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "variant_id",
                "dataset",
                "lines",
                "failed_lines",
                *names,
                *[f"{n}_ci_{end}" for n in with_ci for end in ("low", "high")],
                *costs,
                "currency",
            ]
        )
        for row in rows:
            bounds: list[Any] = []
            for n in with_ci:
                interval = intervals.get((row.variant_id, row.dataset, n))
                bounds += ["", ""] if interval is None else [interval.low, interval.high]
            writer.writerow(
                [
                    row.variant_id,
                    row.dataset,
                    row.lines,
                    row.failed_lines,
                    *[_cell(row.metrics.get(n)) for n in names],
                    *bounds,
                    *["n/a" if row.cost_latency.get(k) is None else row.cost_latency[k] for k in costs],
                    row.currency or "",
                ]
            )
    runs = []
    for row in rows:
        item = row.to_json()
        item["intervals"] = {
            key[2]: interval.to_json()
            for key, interval in intervals.items()
            if key[:2] == (row.variant_id, row.dataset)
        }
        runs.append(item)
    payload = strict_json({**summary, "runs": runs})
    (run_dir / "metrics.json").write_text(
        json.dumps(payload, indent=2, default=str, allow_nan=False), encoding="utf-8"
    )


def variant_keys(rows: list[RunMetrics]) -> dict[str, str]:
    """Short, stable keys (V1, V2, ...) for variant ids, which are too long for chart labels."""
    return {variant: f"V{i}" for i, variant in enumerate(dict.fromkeys(r.variant_id for r in rows), 1)}


def _bar_chart(metric: str, rows: list[RunMetrics], baseline: float | None) -> str:
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    keys = variant_keys(rows)
    variants = list(keys)
    values = {(r.variant_id, r.dataset): finite(r.metrics.get(metric)) for r in rows}
    numbers = [v for v in values.values() if v is not None] + ([baseline] if baseline is not None else [])
    top = max([1.0, *numbers]) if numbers else 1.0
    bar_h, gap, label_w, width = 16, 6, 60, 560
    chart_w = width - label_w - 60
    height = len(variants) * (len(datasets) * bar_h + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'aria-label="{html.escape(metric)} by variant">',
        f'<text x="0" y="14" font-weight="bold">{html.escape(metric)}</text>',
    ]
    y = 24
    for variant in variants:
        parts.append(
            f'<text x="0" y="{y + bar_h}" font-size="12" font-weight="bold">{keys[variant]}'
            f"<title>{html.escape(variant)}</title></text>"
        )
        for d_index, dataset in enumerate(datasets):
            value = values.get((variant, dataset))
            if value is not None:
                w = max(1.0, chart_w * value / top)
                color = PALETTE[d_index % len(PALETTE)]
                parts.append(
                    f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" fill="{color}">'
                    f"<title>{html.escape(dataset)}: {value:.4f}</title></rect>"
                )
                parts.append(
                    f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}" font-size="11">{value:.3f}</text>'
                )
            y += bar_h
        y += gap
    if baseline is not None:
        x = label_w + chart_w * baseline / top
        parts.append(
            f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{y}" stroke="#222" stroke-dasharray="4 3">'
            f"<title>baseline {baseline:.4f}</title></line>"
        )
        parts.append(
            f'<text x="{x + 3:.1f}" y="14" font-size="11" fill="#555">baseline {baseline:.3f}</text>'
        )
    legend_x = label_w
    for d_index, dataset in enumerate(datasets):
        color = PALETTE[d_index % len(PALETTE)]
        parts.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="10" fill="{color}"/>'
            f'<text x="{legend_x + 14}" y="{height - 3}" font-size="11">{html.escape(dataset)}</text>'
        )
        legend_x += 20 + 7 * len(dataset)
    parts.append("</svg>")
    return "".join(parts)


def _short(value: Any) -> Any:
    """``value`` with long strings cut to MAX_CELL_CHARS (for the page only)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_CELL_CHARS else value[:MAX_CELL_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v) for v in value]
    return strict_json(value)


def line_data(lines: dict[str, DatasetLines], keys: dict[str, str]) -> dict[str, Any]:
    """The per-line view's data: per dataset, rows ``[line, inputs, outputs[], errors[], scores[], flags]``
    (one entry per variant in key order); flags: 1 = a variant failed the line (error, or a 0 on a
    pass/fail score), 2 = the variants disagree (different outputs or scores). Flagged lines first."""
    datasets = []
    for name, data in lines.items():
        variants = [v for v in keys if v in data.outputs]
        binary: set[str] = set()
        seen: dict[str, set[float]] = {}
        for v in variants:
            for line_scores in data.scores.get(v, {}).values():
                for k, value in line_scores.items():
                    number = as_number(value)
                    seen.setdefault(k, set()).add(-1.0 if number is None else number)
        binary = {k for k, values in seen.items() if values <= {0.0, 1.0}}
        rows = []
        for index in data.indices:
            outputs = [data.outputs[v].get(index) for v in variants]
            errors = [data.errors[v].get(index) for v in variants]
            scores: list[dict[str, Any] | None] = [data.scores.get(v, {}).get(index) for v in variants]
            failed = any(e is not None for e in errors) or any(
                as_number(s.get(k)) == 0.0 for s in scores if s for k in binary if k in s
            )
            disagree = any(o != outputs[0] for o in outputs) or any(x != scores[0] for x in scores)
            flags = (FAILED if failed else 0) | (DISAGREE if disagree else 0)
            rows.append(
                [index, _short(data.inputs[index]), _short(outputs), _short(errors), _short(scores), flags]
            )
        rows.sort(key=lambda r: (-int(bool(r[5])), -r[5], r[0]))
        datasets.append(
            {
                "name": name,
                "variants": [keys[v] for v in variants],
                "variant_ids": variants,
                "rows": rows,
            }
        )
    return {
        "page_size": PAGE_SIZE,
        "positive": sorted(POSITIVE),
        "negative": sorted(NEGATIVE),
        "datasets": datasets,
    }


def _embed_json(payload: Any) -> str:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(value: Any) -> str:
    number = finite(value)
    if number is not None:
        return f"{number:.4f}"
    return "n/a" if value is None or isinstance(value, float) else str(value)


def _interval_text(interval: Interval | None) -> str:
    return "" if interval is None else f" [{interval.low:.3f}, {interval.high:.3f}]"


def _effective_inputs_html(rows: list[RunMetrics], keys: dict[str, str]) -> str:
    """What each variant really ran with: every node input its hyperparameters and variants set."""
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row.effective_inputs and row.variant_id not in seen:
            seen[row.variant_id] = row.effective_inputs
    if not seen:
        return ""
    esc = html.escape
    body = "".join(
        f"<tr><td>{esc(keys.get(variant, ''))}</td><td>{esc(variant)}</td><td>{esc(node)}</td><td>"
        + esc(", ".join(f"{k} = {json.dumps(v, default=str)}" for k, v in sorted(params.items())))
        + "</td></tr>"
        for variant, nodes in seen.items()
        for node, params in sorted(nodes.items())
    )
    return (
        "<h2>Effective node inputs</h2><p>The inputs each variant's LLM nodes (flex: init parameters) "
        "really ran with, after variants and hyperparameters were applied.</p>"
        "<table><thead><tr><th>key</th><th>variant</th><th>node</th><th>inputs</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def write_html(
    run_dir: Path,
    title: str,
    rows: list[RunMetrics],
    summary: dict[str, Any],
    baseline: Selection | None,
    gate: GateOutcome | None = None,
) -> Path:
    """report.html in ``run_dir`` (see docs/reading-reports.md); returns its path."""
    names = metric_names(rows)
    esc = html.escape
    keys = variant_keys(rows)
    lines = read_lines(run_dir)
    intervals = gate.intervals if gate is not None else metric_intervals(rows, lines)
    gated = set(gate.gated) if gate is not None else set()

    def metric_head(n: str) -> str:
        kind = "gated" if n in gated else ("quality" if is_quality_metric(n) else "cost/latency")
        return f'<th title="{esc(kind)}">{esc(n)}{" ◆" if n in gated else ""}</th>'

    head = "".join(f"<th>{esc(n)}</th>" for n in ["key", "variant", "dataset", "lines", "failed"])
    head += "".join(metric_head(n) for n in names)
    costs = [k for k in COST_LATENCY_KEYS if any(k in row.cost_latency for row in rows)]
    currency = next((row.currency for row in rows if row.currency), "")
    for k in costs:
        unit = f" ({currency})" if k.startswith("cost") and currency else ""
        mark = " ◆" if k in gated else ""
        head += f'<th title="cost/latency">{esc(k + unit)}{mark}</th>'
    body = []
    for row in rows:
        chosen = gate is not None and gate.chosen is not None and gate.chosen.variant_id == row.variant_id
        cells = [esc(c) for c in (keys[row.variant_id], row.variant_id, row.dataset, str(row.lines))]
        cells.append(esc(str(row.failed_lines)))
        for n in names:
            if n not in row.metrics:
                cells.append("")
                continue
            interval = intervals.get((row.variant_id, row.dataset, n))
            text = _fmt(row.metrics[n]) + _interval_text(interval)
            tip = f"95 % CI, {interval.method}, n = {interval.n}" if interval else "no interval"
            target = "#lines?" + urllib.parse.urlencode(
                {"ds": row.dataset, "metric": n, "variant": row.variant_id}, quote_via=urllib.parse.quote
            )
            link = (
                f'<a class="to-lines" href="{esc(target)}" title="{esc(tip)}; show its lines">{esc(text)}</a>'
            )

            cells.append(link if row.dataset in lines else esc(text))
        for k in costs:
            figure = row.cost_latency.get(k)
            cells.append("n/a" if figure is None else esc(_fmt(figure)))
        attr = ' class="chosen"' if chosen else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if baseline is not None:
        cells = [
            "baseline",
            f"{baseline.variant_id} (flow version {baseline.flow_version}, run {baseline.experiment_run})",
            "registered",
            "",
            "",
            *[_fmt(baseline.metrics[n]) if n in baseline.metrics else "" for n in names],
            *["" for _ in costs],
        ]
        body.append('<tr class="baseline">' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    charts = "".join(
        f"<figure>{_bar_chart(n, rows, finite(baseline.metrics.get(n)) if baseline else None)}</figure>"
        for n in names
        if any(finite(r.metrics.get(n)) is not None for r in rows)
    )
    gate_html = "<h2>Gate</h2><p>Not applied yet: run <code>genaiops gate</code>.</p>"
    if gate is not None:
        verdict = "PASSED" if gate.passed else "FAILED"
        items = "".join(f"<li>{esc(x)}</li>" for x in gate.failures or gate.checks)
        if gate.rejected:
            items += "".join(f"<li>not eligible: {esc(x)}</li>" for x in gate.rejected)
        picked = (
            f"<p>Chosen variant: <b>{esc(keys.get(gate.chosen.variant_id, ''))} "
            f"{esc(gate.chosen.variant_id)}</b> (primary metric {esc(gate.primary_metric)} on "
            f"{esc(gate.primary_dataset)}; alpha {gate.alpha})</p>"
            if gate.chosen
            else ""
        )
        if gate.tie_break:
            picked += f'<p class="tie">Tie: {esc(gate.tie_break)}</p>'
        if gate.passed and gate.recorded is None and gate.not_recorded:
            picked += f"<p>Selection not recorded for release: {esc(gate.not_recorded)}.</p>"
        tests = ""
        if gate.comparisons:
            trs = "".join(
                "<tr>"
                + "".join(
                    f"<td>{esc(str(c))}</td>"
                    for c in (
                        comp.label,
                        comp.metric,
                        comp.dataset,
                        keys.get(comp.a, comp.a),
                        keys.get(comp.b, comp.b),
                        comp.result.n,
                        _fmt(comp.result.difference),
                        "n/a"
                        if comp.result.low is None or comp.result.high is None
                        else f"[{comp.result.low:.3f}, {comp.result.high:.3f}]",
                        "n/a" if comp.result.p_value is None else f"{comp.result.p_value:.4g}",
                        "yes" if comp.result.significant(gate.alpha) else "no",
                        comp.result.method,
                    )
                )
                + "</tr>"
                for comp in gate.comparisons
            )
            tests = (
                "<h3>Paired comparisons</h3><table><thead><tr>"
                + "".join(
                    f"<th>{h}</th>"
                    for h in (
                        "comparison",
                        "metric",
                        "dataset",
                        "a",
                        "b",
                        "lines",
                        "a - b",
                        "95 % CI of a - b",
                        "p",
                        f"significant (p &lt; {gate.alpha})",
                        "method",
                    )
                )
                + f"</tr></thead><tbody>{trs}</tbody></table>"
            )
        gate_html = (
            f'<h2>Gate: <span class="{verdict.lower()}">{verdict}</span></h2>{picked}<ul>{items}</ul>{tests}'
        )
    hits = summary.get("contamination")
    if gate is not None:
        hits = [h.to_json() for h in gate.contamination]
    if hits is None:
        contamination_html = ""
    elif not hits:
        contamination_html = "<h2>Contamination</h2><p>No flow text found in the evaluation datasets.</p>"
    else:
        trs = "".join(
            "<tr>"
            + "".join(
                f"<td>{esc(str(c))}</td>"
                for c in (
                    h["kind"],
                    f"{h['similarity']:.2f}",
                    f"{h['flow_file']}:{h['flow_line']}",
                    h["flow_text"],
                    f"{h['dataset']} {h['dataset_file']}:{h['dataset_line']} [{h['column']}]",
                    h["dataset_text"],
                )
            )
            + "</tr>"
            for h in hits
        )
        contamination_html = (
            f'<h2>Contamination: <span class="failed">{len(hits)} hit(s)</span></h2>'
            "<table><thead><tr><th>kind</th><th>similarity</th><th>flow file</th><th>flow text</th>"
            f"<th>dataset line</th><th>dataset text</th></tr></thead><tbody>{trs}</tbody></table>"
        )
    facts = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
        for k, v in summary.items()
        if not isinstance(v, (dict, list))
    )
    scope = summary.get("scope")
    if isinstance(scope, dict) and scope.get("partial"):
        facts += f"<tr><th>partial</th><td>{esc(str(scope.get('why')))}</td></tr>"
    lines_html = '<h2 id="lines">Lines</h2><p>No line outputs in this report folder.</p>'
    if lines:
        lines_html = (
            "<h2>Lines</h2><p>Per dataset, every line: its inputs and each variant's outputs and "
            "evaluator scores side by side. Lines a variant failed (an error, or 0 on a pass/fail score) "
            "and lines where variants disagree come first (red: failed; yellow: disagree). Long texts are "
            f"cut at {MAX_CELL_CHARS} characters (full lines: <code>runs/</code>, <code>evaluations/</code>)."
            '</p><div id="lines"><noscript>The line view needs JavaScript.</noscript></div>'
            f'<script type="application/json" id="line-data">{_embed_json(line_data(lines, keys))}</script>'
            f"<script>{LINES_JS.read_text(encoding='utf-8')}</script>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.chosen {{ background: #e6f4ea; font-weight: bold; }}
tr.baseline {{ background: #f1f1f1; font-style: italic; }}
.passed {{ color: #1a7f37; }} .failed {{ color: #cf222e; }} figure {{ margin: 1em 0; }}
.tie {{ background: #fff8c5; padding: 4px 8px; }}
table.summary td:nth-child(2) {{ max-width: 24em; overflow-wrap: anywhere; }}
#lines .tabs button.on {{ background: #4269d0; color: white; }}
#lines .bar {{ display: flex; gap: 1em; align-items: center; margin: .5em 0; flex-wrap: wrap; }}
#lines .bar input[type=search] {{ width: 22em; }}
table.lines td.pre {{ white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;
  max-width: 28em; vertical-align: top; }}
table.lines tr.fail td {{ background: #ffebe9; }}
table.lines tr.disagree td:first-child {{ background: #fff8c5; }}
table.lines td.error {{ color: #cf222e; }} span.hl {{ background: #ddf4ff; font-weight: bold; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table>{facts}</table>
{gate_html}
{contamination_html}
<h2>Metrics by variant and dataset</h2>
<p>Values with their 95 % confidence interval [low, high] (bootstrap over lines); ◆ marks a metric the
gate decides on. Click a value to see its lines, lowest scores first.</p>
<table class="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
{_effective_inputs_html(rows, keys)}
<h2>Charts</h2>
<p>Bars are labelled with the variant keys of the table above (hover a key for the variant).</p>
{charts}
{lines_html}
<p>Line outputs: <code>runs/&lt;dataset&gt;/&lt;variant&gt;/outputs.jsonl</code>;
metrics: metrics.csv, metrics.json. How to read this page: docs/reading-reports.md.</p>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
