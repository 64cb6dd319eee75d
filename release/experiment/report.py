"""Reports under ``reports/<flow>/<experiment-run>/``: report.html, metrics.csv, metrics.json, line outputs.

Every experiment run gets a new folder (created exclusively), and each run's line outputs live in
``runs/<dataset>/<variant>/outputs.jsonl``: nothing is overwritten between datasets or runs.
The HTML is self-contained (inline CSS and SVG charts; no scripts, no CDN).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import json
import re
import secrets
from pathlib import Path
from typing import Any

from release.experiment.cost import COST_LATENCY_KEYS
from release.experiment.evaluate import RunMetrics
from release.experiment.gate import GateOutcome
from release.experiment.runner import JobResult
from release.registry.base import Selection

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5")


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
                    "dataset": job.dataset,
                    "variant": job.variant.id,
                    "cache_key": job.key,
                    "lines": len(result.lines),
                    "failed": len(result.failed),
                    "cached_lines": result.cached_lines,
                    "metrics": result.metrics,
                },
                indent=2,
            ),
            encoding="utf-8",
        )


def metric_names(rows: list[RunMetrics]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for name in row.metrics:
            if name not in names:
                names.append(name)
    return names


def write_metrics(run_dir: Path, rows: list[RunMetrics], summary: dict[str, Any]) -> None:
    names = metric_names(rows)
    costs = [k for k in COST_LATENCY_KEYS if any(k in row.cost_latency for row in rows)]
    with (run_dir / "metrics.csv").open("x", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["variant_id", "dataset", "lines", "failed_lines", *names, *costs, "currency"])
        for row in rows:
            writer.writerow(
                [
                    row.variant_id,
                    row.dataset,
                    row.lines,
                    row.failed_lines,
                    *[row.metrics.get(n, "") for n in names],
                    *["n/a" if row.cost_latency.get(k) is None else row.cost_latency[k] for k in costs],
                    row.currency or "",
                ]
            )
    payload = {**summary, "runs": [row.to_json() for row in rows]}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")


def variant_keys(rows: list[RunMetrics]) -> dict[str, str]:
    """Short, stable keys (V1, V2, ...) for variant ids, which are too long for chart labels."""
    return {variant: f"V{i}" for i, variant in enumerate(dict.fromkeys(r.variant_id for r in rows), 1)}


def _bar_chart(metric: str, rows: list[RunMetrics], baseline: float | None) -> str:
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    keys = variant_keys(rows)
    variants = list(keys)
    values = {(r.variant_id, r.dataset): r.metrics.get(metric) for r in rows}
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


def write_html(
    run_dir: Path,
    title: str,
    rows: list[RunMetrics],
    summary: dict[str, Any],
    baseline: Selection | None,
    gate: GateOutcome | None = None,
) -> Path:
    names = metric_names(rows)
    esc = html.escape
    keys = variant_keys(rows)
    head = "".join(f"<th>{esc(n)}</th>" for n in ["key", "variant", "dataset", "lines", "failed", *names])
    body = []
    for row in rows:
        chosen = gate is not None and gate.chosen is not None and gate.chosen.variant_id == row.variant_id
        cells = [
            keys[row.variant_id],
            row.variant_id,
            row.dataset,
            str(row.lines),
            str(row.failed_lines),
            *[f"{row.metrics[n]:.4f}" if n in row.metrics else "" for n in names],
        ]
        attr = ' class="chosen"' if chosen else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    if baseline is not None:
        cells = [
            "baseline",
            f"{baseline.variant_id} (flow version {baseline.flow_version})",
            "registered",
            "",
            "",
            *[f"{baseline.metrics[n]:.4f}" if n in baseline.metrics else "" for n in names],
        ]
        body.append('<tr class="baseline">' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    charts = "".join(
        f"<figure>{_bar_chart(n, rows, baseline.metrics.get(n) if baseline else None)}</figure>"
        for n in names
    )
    gate_html = ""
    if gate is not None:
        verdict = "PASSED" if gate.passed else "FAILED"
        items = "".join(f"<li>{esc(x)}</li>" for x in gate.failures or gate.checks)
        if gate.rejected:
            items += "".join(f"<li>not eligible: {esc(x)}</li>" for x in gate.rejected)
        picked = f"<p>Chosen variant: <b>{esc(gate.chosen.variant_id)}</b></p>" if gate.chosen else ""
        gate_html = f'<h2>Gate: <span class="{verdict.lower()}">{verdict}</span></h2>{picked}<ul>{items}</ul>'
    facts = "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
        for k, v in summary.items()
        if not isinstance(v, (dict, list))
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.chosen {{ background: #e6f4ea; font-weight: bold; }}
tr.baseline {{ background: #f1f1f1; font-style: italic; }}
.passed {{ color: #1a7f37; }} .failed {{ color: #cf222e; }} figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table>{facts}</table>
{gate_html}
<h2>Metrics by variant and dataset</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>
<h2>Charts</h2>
<p>Bars are labelled with the variant keys of the table above (hover a key for the variant).</p>
{charts}
<p>Line outputs: <code>runs/&lt;dataset&gt;/&lt;variant&gt;/outputs.jsonl</code>;
metrics: metrics.csv, metrics.json.</p>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
