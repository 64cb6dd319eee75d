"""Throughput and latency of our flow image versus ``pf flow serve`` of the same flow.

Both serve the same flow (web_classification: a page fetch and two LLM calls per request) against the
same local model endpoint and page server, measured one after the other in
this run at 16 concurrent keep-alive clients for the same duration. Prints requests/s, p50 and
p99 for each, and the ratios. Target: >= 5x the requests/s of ``pf flow serve`` and a p99 of at
most 0.25x its p99 (issue 14). Our image serves with gunicorn (``gthread`` workers).

    .venv/bin/python bench/serving.py [--seconds 15] [--clients 16] [--workers N]

Uses the local environment (Docker engine, model endpoint, page server) in ``.genaiops/bench`` on free
ports, started and stopped here. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release.config import REPO_ROOT, load_config
from release.image import ImageSpec, build_image, used_connections
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import bench_environment

READY_S = 120
TARGET_RPS_RATIO = 5.0
TARGET_P99_RATIO = 0.25
# ``pf flow serve`` cannot serve flows/support_triage (its flex entry returns dict[str, str], which
# prompt flow's meta generation rejects), so the comparison uses the DAG flow.
FLOWS = ("web_classification",)


def request_bodies(flow_dir: Path, pages_url: str) -> list[dict[str, Any]]:
    pages = sorted(p.name for p in (flow_dir / "pages").glob("*.html"))
    return [{"url": f"{pages_url}/pages/{name}"} for name in pages]


def wait_ready(port: int, body: dict[str, Any], what: str, proc: Any = None) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        try:
            resp = requests.post(f"http://127.0.0.1:{port}/score", json=body, timeout=5)
            if resp.status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc is not None and getattr(proc, "poll", lambda: None)() is not None:
            break
        time.sleep(0.5)
    raise SystemExit(f"{what} on port {port} did not answer /score within {READY_S} s")


def load(port: int, bodies: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads with one keep-alive connection each, for ``seconds``; bounded."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    payloads = [json.dumps(b).encode() for b in bodies]

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        failed = 0
        i = index
        while time.monotonic() < stop_at:
            body = payloads[i % len(payloads)]
            i += 1
            started = time.perf_counter()
            try:
                conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if ok:
                mine.append(time.perf_counter() - started)
            else:
                failed += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    elapsed = time.monotonic() - began
    latencies.sort()
    if not latencies:
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": float(errors[0])}
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": float(errors[0]),
        "requests": float(len(latencies)),
    }


def start_pf_serve(
    flow_dir: Path, model_url: str, key: str, home: Path
) -> tuple[subprocess.Popen[bytes], int]:
    pf = str(Path(sys.executable).with_name("pf"))
    env = {
        **os.environ,
        "PF_HOME_DIRECTORY": str(home),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "PF_DISABLE_TRACING": "true",
        "PF_LOGGING_LEVEL": "WARNING",
    }
    subprocess.run(
        [pf, "config", "set", "telemetry.enabled=false", "trace.destination=none"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    conn_file = home / "local_openai.yaml"
    conn_file.write_text(f"name: local_openai\ntype: open_ai\napi_key: '{key}'\nbase_url: '{model_url}'\n")
    subprocess.run(
        [pf, "connection", "create", "--file", str(conn_file)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    conn_file.unlink()
    port = free_port()
    cmd = [
        pf,
        "flow",
        "serve",
        "--source",
        str(flow_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--skip-open-browser",
    ]
    if (flow_dir / "flow.flex.yaml").is_file():
        cmd += ["--init", "connection=local_openai"]
    log = (home / "pf-serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flow", default="web_classification", choices=FLOWS)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="WORKERS of our server (0: image default)")
    args = parser.parse_args()
    cfg = load_config("local")
    flow_dir = REPO_ROOT / cfg.flows[args.flow].path
    env: LocalEnvironment = bench_environment(["docker", "model", "pages"])
    bodies = request_bodies(flow_dir, env.pages_url)
    home = Path(tempfile.mkdtemp(prefix="bench-pf-"))
    container = None
    pf_proc = None
    try:
        key = env.model_api_key()
        client = docker.DockerClient(base_url=env.docker_host(), timeout=900)
        spec = ImageSpec(
            flow=args.flow,
            flow_dir=flow_dir,
            repository=f"genaiops-bench/{args.flow.replace('_', '-')}",
            tag="serving",
            base_image=cfg.local_settings().base_image,
            connections=tuple(used_connections(flow_dir, cfg.connections)),
        )
        built = build_image(client, spec, home / "ctx")
        print(f"image {built.reference} built in {built.seconds:.1f} s")

        # pf flow serve (the baseline)
        # pf writes .promptflow/ and logs into the flow folder it serves: give it a copy
        pf_flow = home / "flow"
        shutil.copytree(flow_dir, pf_flow, ignore=shutil.ignore_patterns(".promptflow", "__pycache__"))
        pf_proc, pf_port = start_pf_serve(pf_flow, env.model_url, key, home)
        wait_ready(pf_port, bodies[0], "pf flow serve", pf_proc)
        load(pf_port, bodies, args.clients, 2.0)  # warm-up
        baseline = load(pf_port, bodies, args.clients, args.seconds)
        pf_proc.terminate()
        pf_proc.wait(timeout=30)
        pf_proc = None

        # our image
        port = free_port()
        run_env = {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "LOCAL_OPENAI_API_KEY": key,
            "LOCAL_OPENAI_API_BASE": env.model_url,
        }
        if args.workers:
            run_env["WORKERS"] = str(args.workers)
        container = client.containers.run(
            built.reference,
            detach=True,
            network_mode="host",
            environment=run_env,
            name=f"genaiops-bench-{uuid.uuid4().hex[:8]}",
        )
        wait_ready(port, bodies[0], "flow image")
        load(port, bodies, args.clients, 2.0)  # warm-up
        ours = load(port, bodies, args.clients, args.seconds)

        print(f"flow {args.flow}, {args.clients} concurrent clients, {args.seconds:.0f} s each")
        for name, r in (("pf flow serve", baseline), ("our flow image", ours)):
            print(
                f"  {name:15s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                f"  errors {int(r['errors'])}"
            )
        ratio = ours["rps"] / baseline["rps"] if baseline["rps"] else float("inf")
        p99_ratio = ours["p99_ms"] / baseline["p99_ms"]
        passed = ratio >= TARGET_RPS_RATIO and p99_ratio <= TARGET_P99_RATIO and ours["errors"] == 0
        print(
            f"  throughput ratio {ratio:.2f}x (target >= {TARGET_RPS_RATIO:g}x), "
            f"p99 ratio {p99_ratio:.2f} (target <= {TARGET_P99_RATIO:g}): "
            f"{'PASS' if passed else 'FAIL'}"
        )
        return 0 if passed else 1
    finally:
        if pf_proc is not None:
            pf_proc.terminate()
            try:
                pf_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pf_proc.kill()
        if container is not None:
            container.remove(force=True)
        log_file = home / "pf-serve.log"
        if log_file.is_file() and os.environ.get("BENCH_SHOW_PF_LOG"):
            print(log_file.read_text()[-3000:])
        shutil.rmtree(home, ignore_errors=True)
        env.down()


if __name__ == "__main__":
    sys.exit(main())
