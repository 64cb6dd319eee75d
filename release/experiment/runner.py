"""The concurrent runner: every line of every job on one bounded thread pool.

* Concurrency: at most ``concurrency`` lines run at once across all variants and datasets
  (``max_in_flight`` records the highest number observed).
* Throttling: a line failing with 429 / a transient error is retried up to ``max_retries`` times,
  waiting the server's ``Retry-After`` when known, else an exponential back-off with jitter,
  capped at ``max_backoff_s``. Lines still failing are reported, never dropped silently.
* Timeouts: every model call is bounded by ``request_timeout_s`` (the engine abandons it and the
  line fails retryably), so a hanging call costs one timeout and a retry, never the server's patience.
* Usage and latency: each line records its model calls' ``usage`` (tokens per call and model) and
  the wall time of the attempt that produced its outputs (``wall_ms``); cached lines keep the
  figures of the run that produced them.
* Cache: each completed line is appended to ``<cache>/<line key>/lines.jsonl`` at once, so a run
  interrupted half-way resumes with only the missing lines, and an unchanged run costs nothing.
  The line key is the job's content key (flow, data, parameters) plus the identity of the model
  behind the connections (:mod:`release.experiment.model_identity`), read once per runner: a
  new endpoint, api version or model version does not reuse answers of the old one.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.engine.base import (
    CallUsage,
    ConnectionSpec,
    Engine,
    FlowSession,
    FlowVariant,
    LineFailed,
    LineOutput,
)
from release.experiment.model_identity import model_identity
from release.experiment.plan import Job
from release.registry.hashing import hash_text

log = logging.getLogger(__name__)
LINE_FORMAT = "2"  # cached line records carry usage and wall time since format 2


@dataclass
class LineRecord:
    index: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None = None
    aggregation_inputs: Any = None
    error: str | None = None
    attempts: int = 0
    cached: bool = False
    usage: list[CallUsage] | None = None  # the model calls of the successful attempt; None: not recorded
    wall_ms: float | None = None  # wall time of the attempt that produced the outputs

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "aggregation_inputs": self.aggregation_inputs,
            "error": self.error,
            "attempts": self.attempts,
            "usage": None if self.usage is None else [call.to_json() for call in self.usage],
            "wall_ms": self.wall_ms,
        }


@dataclass
class JobResult:
    job: Job
    lines: list[LineRecord] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[LineRecord]:
        return [line for line in self.lines if line.error is not None]

    @property
    def cached_lines(self) -> int:
        return sum(1 for line in self.lines if line.cached)


class Runner:
    def __init__(
        self,
        engine: Engine,
        connections: list[ConnectionSpec],
        cache_dir: Path,
        *,
        concurrency: int = 8,
        max_retries: int = 5,
        connection_overrides: dict[str, str] | None = None,
        backoff_base_s: float = 0.5,
        max_backoff_s: float = 10.0,
        progress: bool = True,
        use_cache: bool = True,
        model_identity: str | None = None,
        request_timeout_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.connections = connections
        self.cache_dir = cache_dir
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.overrides = dict(connection_overrides or {})
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.progress = progress
        self.use_cache = use_cache
        self.request_timeout_s = request_timeout_s
        self._model_identity = model_identity  # None: read from the endpoints at the first run
        self._sessions: dict[tuple[str, str], FlowSession] = {}
        self._openers: dict[tuple[str, str], Callable[[], FlowSession]] = {}
        self._session_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self.retries = 0
        self.executed_lines = 0

    # -- sessions (one loaded flow per flow folder and variant, shared by threads) -----------
    def add_opener(self, flow_dir: Path, variant: FlowVariant, opener: Callable[[], FlowSession]) -> None:
        """Jobs of ``flow_dir`` with ``variant`` run in the session ``opener`` makes (at first use)
        instead of an engine session: how other evaluation engines (built-in evaluators) plug in."""
        with self._lock:
            self._openers[(str(flow_dir), variant.id)] = opener

    def session(self, job: Job) -> FlowSession:
        key = (str(job.flow_dir), job.variant.id)
        with self._lock:
            lock = self._session_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._sessions and key in self._openers:
                self._sessions[key] = self._openers[key]()
            if key not in self._sessions:
                self._sessions[key] = self.engine.open(
                    job.flow_dir,
                    job.variant,
                    self.connections,
                    self.overrides,
                    request_timeout_s=self.request_timeout_s,
                )
            return self._sessions[key]

    # -- cache ---------------------------------------------------------------------------
    def model_identity(self) -> str:
        """The identity of the model behind the connections: read once per runner, then reused."""
        with self._lock:
            if self._model_identity is None:
                self._model_identity = model_identity(self.connections)
            return self._model_identity

    def line_key(self, job: Job) -> str:
        """The cache key of the job's lines: its content key and the model identity."""
        return hash_text("lines", LINE_FORMAT, job.key, self.model_identity())

    def _cache_file(self, job: Job) -> Path:
        key = self.line_key(job)
        return self.cache_dir / key[:2] / key / "lines.jsonl"

    def _load_cached(self, job: Job) -> dict[int, LineRecord]:
        path = self._cache_file(job)
        if not self.use_cache or not path.is_file():
            return {}
        found: dict[int, LineRecord] = {}
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(text)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: run it again
            if item.get("error") is None and item.get("index") in job.indices:
                found[item["index"]] = LineRecord(
                    item["index"],
                    item["inputs"],
                    item["outputs"],
                    item.get("aggregation_inputs"),
                    None,
                    item["attempts"],
                    True,
                    None
                    if item.get("usage") is None
                    else [CallUsage.from_json(call) for call in item["usage"]],
                    item.get("wall_ms"),
                )
        return found

    def _append(self, job: Job, record: LineRecord, lock: threading.Lock) -> None:
        if record.error is not None:
            return  # failures are not cached: the next run tries them again
        path = self._cache_file(job)
        with lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record.to_json(), default=str) + "\n")

    # -- execution -----------------------------------------------------------------------
    def _run_line(self, job: Job, index: int, inputs: dict[str, Any]) -> LineRecord:
        record = LineRecord(index, inputs)
        session = self.session(job)
        for attempt in range(self.max_retries + 1):
            record.attempts = attempt + 1
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            began = time.perf_counter()
            try:
                result: LineOutput = session.run_line(inputs, index)
                record.outputs, record.aggregation_inputs, record.error = (
                    result.outputs,
                    result.aggregation_inputs,
                    None,
                )
                record.usage = list(result.usage)
                record.wall_ms = round((time.perf_counter() - began) * 1000, 3)
                break
            except LineFailed as exc:
                record.error = str(exc)[:2000]
                if not exc.retryable or attempt == self.max_retries:
                    if exc.retryable:
                        tries = f"{attempt + 1} attempt(s) (max_retries {self.max_retries})"
                        record.error = f"failed after {tries}: {record.error}"
                    break
                delay = exc.retry_after if exc.retry_after is not None else self.backoff_base_s * 2**attempt
                delay = min(self.max_backoff_s, delay) * (1 + random.uniform(0, 0.25))
                with self._lock:
                    self.retries += 1
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self.executed_lines += 1
            time.sleep(delay)
        return record

    def run(self, jobs: list[Job], label: str = "lines") -> list[JobResult]:
        """Run every line of ``jobs`` (cached lines are reused); results in job order."""
        from tqdm import tqdm

        results = [JobResult(job) for job in jobs]
        by_index: list[dict[int, LineRecord]] = [self._load_cached(job) for job in jobs]
        total = sum(len(job.indices) for job in jobs)
        cached = sum(len(found) for found in by_index)
        file_locks = [threading.Lock() for _ in jobs]
        bar = tqdm(
            total=total,
            initial=cached,
            desc=label,
            unit="line",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        failed = 0
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="line")
        try:
            if True:
                futures: dict[Future[LineRecord], int] = {}
                for j, job in enumerate(jobs):
                    for index, inputs in zip(job.indices, job.inputs, strict=True):
                        if index not in by_index[j]:
                            futures[pool.submit(self._run_line, job, index, inputs)] = j
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                    for future in done:
                        j = futures[future]
                        record = future.result()
                        by_index[j][record.index] = record
                        self._append(jobs[j], record, file_locks[j])
                        failed += record.error is not None
                        bar.update(1)
                        if failed:
                            bar.set_postfix(failed=failed)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # interrupted: completed lines are cached
            raise
        finally:
            pool.shutdown(wait=True)
            bar.close()
        for j, result in enumerate(results):
            result.lines = [by_index[j][i] for i in sorted(by_index[j])]
        return results

    def aggregate(self, result: JobResult) -> dict[str, float]:
        """The job's flow aggregation (evaluator metrics) over its successful lines."""
        ok = [line for line in result.lines if line.error is None]
        if not ok:
            return {}
        session = self.session(result.job)
        return session.aggregate(
            [line.inputs for line in ok],
            [LineOutput(line.outputs or {}, line.aggregation_inputs) for line in ok],
        )

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
