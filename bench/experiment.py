"""Benchmark: our concurrent experiment runner vs the template's way (one ``pf run`` after another).

V node variants x D datasets x N lines of web_classification against the local model endpoint with a
fixed injected latency. Both ways run in this process, against the same servers, in the same run.

    ideal      = model calls x latency / concurrency    (the bound for any runner at that concurrency)
    speedup    = template time / our time               (target >= 4 when V x D >= 8)
    efficiency = ideal / our time                       (target >= 0.7)

Hanging calls (issue 12.8): the same runs again (no cache) with ``--hang-rate`` of the model calls
never answered and ``request_timeout_s = --timeout-s``. Every line must succeed, and the run must
stay within the timeout's cost: our time + (timeout + 1 s back-off + one line) x ceil(hung calls /
concurrency), where one line = our time x concurrency / lines (each hung call holds one of the
concurrency slots for one timeout, then its line waits a back-off and runs again). Before the
per-call timeout a hung call waited for the server (about 120 s each).

Run: ``.venv/bin/python bench/experiment.py [--latency-ms 200] [--lines 8] [--datasets 4] [--concurrency 8]
[--hang-rate 0.1] [--timeout-s 10]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from release.local_env.environment import model_server_command  # noqa: E402
from release.local_env.net import free_port, http_status, wait_until  # noqa: E402

WC = REPO / "flows" / "web_classification"
KEY = "sk-bench-" + os.urandom(6).hex()


def _start(argv: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_until(lambda: http_status("/health", port) == 200, timeout_s=30):
        proc.kill()
        raise SystemExit(f"{argv[2]} did not start on port {port}")
    return proc


def _datasets(root: Path, count: int, lines: int, pages_url: str) -> list[Path]:
    rows = [json.loads(x) for x in (WC / "data" / "full.jsonl").read_text().splitlines() if x.strip()]
    paths = []
    for d in range(count):
        path = root / f"bench_{d}.jsonl"
        picked = [rows[(d * 3 + i) % len(rows)] for i in range(lines)]
        path.write_text("".join(json.dumps(r) + "\n" for r in picked))
        paths.append(path)
    return paths


def _admin(port: int, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _experiment(root: Path, datasets: list[Path], concurrency: int, timeout_s: float = 30.0) -> Path:
    text = [
        "name: web_classification_bench",
        f"flow: {WC}",
        "connections:\n- name: local_openai\n  connection_type: OpenAIConnection",
        "datasets:",
        *[f'- name: {p.stem}\n  source: {p}\n  mappings:\n    url: "${{data.url}}"' for p in datasets],
        "mode: template",
        f"concurrency: {concurrency}",
        "max_retries: 2",
        f"request_timeout_s: {timeout_s}",
    ]
    path = root / "experiment.yaml"
    path.write_text("\n".join(text) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--lines", type=int, default=16, help="lines per dataset (N)")
    parser.add_argument("--datasets", type=int, default=4, help="datasets (D)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-template", action="store_true", help="time only our runner (quick look)")
    parser.add_argument("--hang-rate", type=float, default=0.1, help="share of model calls that hang")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="request_timeout_s for the hang run")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="genaiops-bench-"))
    model_port, pages_port = free_port(), free_port()
    env = dict(
        os.environ,
        LOCAL_MODEL_API_KEY=KEY,
        GENAIOPS_MODEL_PORT=str(model_port),
        GENAIOPS_PAGES_PORT=str(pages_port),
        PYTHONPATH=str(REPO),
    )
    os.environ.update(
        {k: env[k] for k in ("LOCAL_MODEL_API_KEY", "GENAIOPS_MODEL_PORT", "GENAIOPS_PAGES_PORT")}
    )
    procs = [
        _start(
            [*model_server_command(model_port), "--latency-ms", str(args.latency_ms)],
            model_port,
            env,
        ),
        _start(
            [
                sys.executable,
                "-m",
                "release.local_env.page_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(pages_port),
                "--flows-dir",
                str(REPO / "flows"),
            ],
            pages_port,
            env,
        ),
    ]
    try:
        from release.engine import get_engine
        from release.engine.base import ConnectionSpec
        from release.engine.promptflow import batch_run
        from release.experiment import pipeline

        engine = get_engine(root / "promptflow")  # configure prompt flow once (home, telemetry off)
        # one-time process costs (imports ~5 s, package tool list ~1 s) are kept out of both timings
        engine.warm_up()  # type: ignore[attr-defined]
        pages_url = f"http://127.0.0.1:{pages_port}/pages"
        datasets = _datasets(
            root, args.datasets, args.lines, pages_url.replace(f"127.0.0.1:{pages_port}/pages", "X")
        )
        for p in datasets:  # resolve the page placeholder for the template way (pf run reads the file as is)
            p.with_suffix(".resolved.jsonl").write_text(p.read_text().replace("{pages_url}", pages_url))
        experiment = _experiment(root, datasets, args.concurrency, args.timeout_s)
        variants = ["variant_0", "variant_1"]
        runs = len(variants) * len(datasets)
        lines = runs * args.lines
        calls = lines * 2  # two LLM nodes per line
        ideal = calls * args.latency_ms / 1000 / args.concurrency
        print(
            f"V={len(variants)} variants x D={len(datasets)} datasets x N={args.lines} lines = {lines} lines, "
            f"{calls} model calls at {args.latency_ms:.0f} ms, concurrency {args.concurrency}"
        )

        options = pipeline.Options(
            flow="web_classification_bench",
            env="local",
            experiment_file=experiment,
            reports_dir=root / "reports",
            state_dir=root / "state",
            progress=False,
            start_local=False,
        )
        began = time.perf_counter()
        result = pipeline.run(options, with_evaluation=False)
        ours = time.perf_counter() - began
        assert sum(len(r.lines) for r in result.runs) == lines and not any(r.failed for r in result.runs)

        began = time.perf_counter()
        result2 = pipeline.run(options, with_evaluation=False)
        cached = time.perf_counter() - began
        assert sum(r.cached_lines for r in result2.runs) == lines

        # the same runs with hanging model calls, nothing cached
        stats = _admin(model_port, "/admin/stats")
        hung_before = int(stats["injected"]["hang"])  # type: ignore[index]
        _admin(
            model_port,
            "/admin/faults",
            {"latency_ms": args.latency_ms, "hang_rate": args.hang_rate, "hang_max_s": 4 * args.timeout_s},
        )
        began = time.perf_counter()
        # the default retry budget (max_retries 5): a line retries until none of its calls hangs
        hang_options = dataclasses.replace(options, use_cache=False, max_retries=5)
        result3 = pipeline.run(hang_options, with_evaluation=False)
        hanging = time.perf_counter() - began
        _admin(model_port, "/admin/faults", {"latency_ms": args.latency_ms})
        hung = int(_admin(model_port, "/admin/stats")["injected"]["hang"]) - hung_before  # type: ignore[index]
        ok_lines = sum(1 for r in result3.runs for line in r.lines if line.error is None)
        assert ok_lines == lines, f"{lines - ok_lines} line(s) failed with hanging calls"
        line_s = ours * args.concurrency / lines  # one line's wall time in the run without hangs
        bound = ours + (args.timeout_s + 1.0 + line_s) * math.ceil(hung / args.concurrency)
        hang_report = [
            f"with {args.hang_rate:.0%} of calls hanging, request_timeout_s {args.timeout_s:g}: "
            f"{hanging:7.2f} s   {hung} hung call(s) abandoned and retried, "
            f"{ok_lines}/{lines} lines ok, {result3.retries} line retries",
            f"  bound: our time + (timeout + 1 s back-off + one line {line_s:.2f} s) x ceil(hung / concurrency)"
            f" = {bound:7.2f} s   "
            f"-> {'within' if hanging <= bound else 'OVER'} ({hanging / bound:4.2f} of the bound); "
            f"without the timeout each hung call waited ~120 s",
        ]

        if args.skip_template:
            print(f"our runner: {ours:.2f} s, ideal {ideal:.2f} s, efficiency {ideal / ours:.2f}")
            print("\n".join(hang_report))
            return 0
        conn = ConnectionSpec("local_openai", "OpenAI", f"http://127.0.0.1:{model_port}/v1", KEY)
        began = time.perf_counter()
        for d, path in enumerate(datasets):
            for variant in variants:
                out = batch_run(
                    WC,
                    path.with_suffix(".resolved.jsonl"),
                    {"url": "${data.url}"},
                    f"${{summarize_text_content.{variant}}}",
                    [conn],
                    f"bench_{os.getpid()}_{d}_{variant}",
                )
                assert out["lines"] == args.lines, out
        template = time.perf_counter() - began

        print(f"template way (pf run x {runs}, one after another): {template:7.2f} s")
        print(
            f"our runner (all runs concurrently):              {ours:7.2f} s   max in flight {result.max_in_flight}"
        )
        print(f"our runner again, nothing changed (cache):       {cached:7.2f} s")
        print(f"ideal (calls x latency / concurrency):           {ideal:7.2f} s")
        print(f"speedup vs template way: {template / ours:5.1f}x   (target >= 4x)")
        print(f"efficiency vs ideal:     {ideal / ours:5.2f}    (target >= 0.7)")
        print("\n".join(hang_report))
        print(
            f"per pf run overhead:     {(template - calls * args.latency_ms / 1000 / max(1, min(4, args.lines))) / runs:5.2f} s "
            "(rough: template time minus its own calls at pf's default 4 workers, per run)"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
