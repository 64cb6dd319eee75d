"""Benchmark of the local model endpoint: chat completions per second and the latency it adds.

Starts the real server (``python -m release.local_env.model_server --port 0``) with no injected
faults, then drives it from this process with a lean asyncio keep-alive HTTP/1.1 client (one
connection per simulated client, no thread per request), for a fixed time per scenario:

- baseline: ``GET /health`` on the same server (HTTP, loopback and client cost only);
- chat completions at 1 and 32 concurrent clients, with one repeated few-shot classification
  prompt (answers cached) and with a unique prompt per request (cache misses), and streaming.

Prints requests/s, p50/p99 latency, the ratio to the 1,000 req/s target at 32 clients, and the p99
the server adds over the baseline. Timings are only printed, never asserted.

    .venv/bin/python bench/model_endpoint.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
TARGET_RPS = 1000.0
IO_TIMEOUT_S = 10.0

SHOTS = [
    ("https://play.google.com/store/apps/details?id=com.example.music", "A free music streaming app.", "App"),
    ("https://www.imdb.com/title/tt0111161/", "A 1994 drama film; cast, reviews and trailer.", "Movie"),
    ("https://arxiv.org/abs/2303.08774", "Abstract, authors and citations of a research paper.", "Academic"),
    ("https://www.youtube.com/@example", "A video channel with 20M subscribers.", "Channel"),
    ("https://www.linkedin.com/in/someone", "Profile: experience, education and connections.", "Profile"),
]


def classification_body(url: str, text: str) -> dict[str, object]:
    shots = "".join(
        f'URL: {u}\nText content: {t}\nOUTPUT:\n{{"category": "{c}", "evidence": "Both"}}\n\n'
        for u, t, c in SHOTS
    )
    user = (
        f"Here are a few examples:\n{shots}For a given URL and text content, classify the url:\n"
        f"URL: {url}\nText content: {text}\nOUTPUT:\n"
    )
    return {
        "model": "gpt-35-turbo",
        "temperature": 0.2,
        "max_tokens": 128,
        "presence_penalty": None,
        "messages": [
            {
                "role": "system",
                "content": "Classify the url into Movie, App, Academic, Channel, Profile or None.",
            },
            {"role": "user", "content": user},
        ],
    }


def request_bytes(host: str, method: str, path: str, key: str, body: dict[str, object] | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        start = lower.index(b"content-length:") + 15
        length = int(lower[start : lower.index(b"\r\n", start)])
        await reader.readexactly(length)
    return status


async def drive(
    host: str, port: int, concurrency: int, seconds: float, make_request: Callable[[int], bytes]
) -> tuple[float, list[float], int]:
    """Run ``concurrency`` keep-alive clients for ``seconds``; returns (req/s, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def one_client() -> None:
        nonlocal failures
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), IO_TIMEOUT_S)
        try:
            while time.perf_counter() < deadline:
                data = make_request(next(counter))
                began = time.perf_counter()
                writer.write(data)
                status = await asyncio.wait_for(read_response(reader), IO_TIMEOUT_S)
                latencies.append(time.perf_counter() - began)
                failures += status != 200
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies, failures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start_server(key: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "LOCAL_MODEL_API_KEY": key}
    proc = subprocess.Popen(
        [sys.executable, "-m", "release.local_env.model_server", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the server prints it once listening (or exits)
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"model endpoint did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


async def run(seconds: float) -> dict[str, dict[str, float]]:
    key = secrets.token_hex(16)
    proc, url = start_server(key)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", int(parts.port or 0)
    health = request_bytes(host, "GET", "/health", key, None)
    same = request_bytes(host, "POST", "/v1/chat/completions", key, classification_body(*SHOTS[1][:2]))
    stream_body = {
        **classification_body(*SHOTS[1][:2]),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = request_bytes(host, "POST", "/v1/chat/completions", key, stream_body)

    # Built before timing, so the client's JSON encoding does not compete with the server for CPU.
    uniques = [
        request_bytes(
            host,
            "POST",
            "/v1/chat/completions",
            key,
            classification_body(
                f"https://www.imdb.com/title/tt{i:07d}/", f"Film number {i}: cast and reviews."
            ),
        )
        for i in range(int(seconds * 6000))
    ]

    def unique(i: int) -> bytes:
        return uniques[i % len(uniques)]

    scenarios: list[tuple[str, int, Callable[[int], bytes]]] = [
        ("health (baseline)", 1, lambda _: health),
        ("chat, same prompt", 1, lambda _: same),
        ("health (baseline)", 32, lambda _: health),
        ("chat, same prompt", 32, lambda _: same),
        ("chat, unique prompts", 32, unique),
        ("chat, streaming", 32, lambda _: stream),
    ]
    results: dict[str, dict[str, float]] = {}
    try:
        await drive(host, port, 8, min(1.0, seconds), lambda _: same)  # warm-up
        for name, concurrency, make in scenarios:
            rps, latencies, failures = await drive(host, port, concurrency, seconds, make)
            results[f"{name} @{concurrency}"] = {
                "rps": rps,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * percentile(latencies, 0.99),
                "failures": failures,
            }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each scenario")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    results = asyncio.run(run(args.seconds))
    print(
        f"local model endpoint, {os.cpu_count()} cores, client and server on this machine, {args.seconds:g} s each"
    )
    print(f"{'scenario':<32}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
    for name, r in results.items():
        print(f"{name:<32}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['failures']:>8.0f}")
    chat32 = results["chat, same prompt @32"]["rps"]
    unique32 = results["chat, unique prompts @32"]["rps"]
    health32 = results["health (baseline) @32"]["rps"]
    one, base = results["chat, same prompt @1"], results["health (baseline) @1"]
    print(
        f"chat @32 vs the {TARGET_RPS:.0f} req/s target: x{chat32 / TARGET_RPS:.2f} (unique prompts x{unique32 / TARGET_RPS:.2f})"
    )
    print(f"chat @32 vs /health @32 on the same server: {chat32 / health32:.2f}")
    print(
        "added by a chat completion over /health (1 client): "
        f"p50 {one['p50_ms'] - base['p50_ms']:+.2f} ms, p99 {one['p99_ms'] - base['p99_ms']:+.2f} ms"
    )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(r["failures"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
