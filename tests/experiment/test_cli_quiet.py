"""The CLI is quiet by default: prompt flow's own chatter shows only with ``-v``.

Runs ``genaiops experiment`` for real in a subprocess (the real model endpoint from the
``services`` fixture) and reads what a user would see on the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHATTER = ("environ OTLP endpoint is not set", "had been terminated")


def run_cli(exp, *prefix: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    args = exp.args("experiment", "web_classification", "--dataset", "web_classification_smoke")
    # a state folder per run: a cached run would execute nothing and print nothing to hide
    args[args.index("--state-dir") + 1] = str(exp.state / ("verbose" if prefix else "quiet"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PF_LOGGING_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "release", *prefix, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_prompt_flow_chatter_only_with_verbose(exp) -> None:  # type: ignore[no-untyped-def]
    quiet = run_cli(exp)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    shown = quiet.stdout + quiet.stderr
    assert not [line for line in shown.splitlines() if any(c in line for c in CHATTER)], shown[-3000:]
    assert "web_classification" in shown  # our own progress and summary still show

    verbose = run_cli(exp, "-v")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "environ OTLP endpoint is not set" in verbose.stdout + verbose.stderr
