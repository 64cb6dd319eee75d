"""Smoke tests declared per flow (``flows.<f>.release.smoke_tests``) and bounded readiness waits.

A smoke test sends one sample request and fails for real: the HTTP status must be 200, the body
a JSON object holding ``expect_keys``, equal to ``expect`` and within ``expect_one_of``. Before
the tests run, :func:`wait_ready` retries (bounded by a deadline) while the deployment is not
answering yet (connection refused, 502/503/504). Every request has its own timeout.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from release.config import SmokeTest
from release.errors import CheckFailed

log = logging.getLogger(__name__)

NOT_READY_STATUSES = frozenset({502, 503, 504})
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SmokeResult:
    name: str
    ok: bool
    detail: str
    status: int | None = None
    elapsed_ms: float = 0.0


class SmokeFailed(CheckFailed):
    """One or more smoke tests failed; ``results`` tells which and why."""

    def __init__(self, message: str, results: Sequence[SmokeResult]) -> None:
        super().__init__(message)
        self.results = list(results)


def health_url(scoring_url: str) -> str:
    """``.../score`` -> ``.../health`` (the flow image serves both)."""
    base = scoring_url[: -len("/score")] if scoring_url.endswith("/score") else scoring_url.rstrip("/")
    return f"{base}/health"


def wait_ready(
    url: str,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    interval_s: float = 0.5,
) -> float:
    """Wait until ``url`` answers (GET, or POST ``body``) with a status other than 502/503/504.

    Returns the seconds waited; raises :class:`CheckFailed` when the deadline passes.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CheckFailed(f"{url} was not ready within {timeout_s:.0f} s (last: {last})")
        try:
            per_request = max(0.5, min(REQUEST_TIMEOUT_S, remaining))
            if body is None:
                response = requests.get(url, headers=headers, timeout=per_request)
            else:
                response = requests.post(url, json=body, headers=headers, timeout=per_request)
            if response.status_code not in NOT_READY_STATUSES:
                return time.monotonic() - started
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def check_response(test: SmokeTest, status: int, text: str) -> str | None:
    """Why a response fails ``test``, or None when it passes."""
    if status != 200:
        return f"HTTP {status} (expected 200): {text[:200]!r}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"response is not JSON: {text[:200]!r}"
    if not isinstance(body, dict):
        return f"response is not a JSON object: {text[:200]!r}"
    missing = [key for key in test.expect_keys if key not in body]
    if missing:
        return f"response lacks key(s) {missing}; got keys {sorted(body)}"
    for key, expected in test.expect.items():
        if body.get(key) != expected:
            return f"{key} = {body.get(key)!r}, expected {expected!r}"
    for key, allowed in test.expect_one_of.items():
        if body.get(key) not in allowed:
            return f"{key} = {body.get(key)!r}, expected one of {allowed!r}"
    return None


def run_one(url: str, test: SmokeTest, headers: dict[str, str] | None = None) -> SmokeResult:
    started = time.monotonic()
    try:
        response = requests.post(url, json=test.request, headers=headers, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as exc:
        elapsed = (time.monotonic() - started) * 1000
        return SmokeResult(test.name, False, f"request failed: {type(exc).__name__}", None, elapsed)
    elapsed = (time.monotonic() - started) * 1000
    problem = check_response(test, response.status_code, response.text)
    return SmokeResult(test.name, problem is None, problem or "ok", response.status_code, elapsed)


def run_smoke_tests(
    url: str,
    tests: Sequence[SmokeTest],
    *,
    headers: dict[str, str] | None = None,
    readiness_timeout_s: float = 180.0,
    what: str = "deployment",
) -> list[SmokeResult]:
    """Wait (bounded) until ``url`` is ready, run every test once; raise :class:`SmokeFailed`."""
    if tests:
        wait_ready(url, timeout_s=readiness_timeout_s, headers=headers, body=tests[0].request)
    else:
        log.warning("no smoke tests declared for %s: only its health is checked", what)
        wait_ready(health_url(url), timeout_s=readiness_timeout_s, headers=headers)
        return []
    results = [run_one(url, test, headers) for test in tests]
    failed = [r for r in results if not r.ok]
    if failed:
        lines = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise SmokeFailed(f"smoke test(s) failed on {what} ({url}): {lines}", results)
    return results
