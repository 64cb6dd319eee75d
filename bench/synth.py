"""Synthesis cost: every Azure environment in ONE process vs one environment in a fresh process.

Both are measured in this run, each as a fresh Python process (wall time, start to exit),
plus the share of the all-environments process spent importing cdktf and the providers.
Target: all environments <= 1.5x one environment. Prints the ratios; exits 1 if missed.
Configs are loaded in example mode (documented example values for unset variables).

    .venv/bin/python bench/synth.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.5

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
import infra  # sets the jsii env
import cdktf
import cdktf_cdktf_provider_azurerm.provider  # loads the azurerm jsii assembly
t_import = time.perf_counter() - t0
from infra.app import synth
from release.config import available_environments, load_config
names = {names!r} or available_environments()
configs = [c for c in (load_config(n, example=True) for n in names) if c.kind == "azure"]
paths = synth(configs, __import__("pathlib").Path({out!r}))
print(json.dumps({{"import": t_import, "inside": time.perf_counter() - t0, "stacks": sorted(paths)}}))
"""


def run(names: list[str]) -> dict[str, float | list[str]]:
    with tempfile.TemporaryDirectory() as out:
        code = CHILD.format(repo=str(REPO), names=names, out=out)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600, check=True
        )
        wall = time.perf_counter() - started
    result: dict[str, float | list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    one, every = [], []
    for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
        one.append(run(["dev"]))
        every.append(run([]))
    one_wall = statistics.median(float(r["wall"]) for r in one)
    all_wall = statistics.median(float(r["wall"]) for r in every)
    all_import = statistics.median(float(r["import"]) for r in every)
    stacks = every[0]["stacks"]
    ratio = all_wall / one_wall
    print(f"one environment (dev), fresh process : {one_wall:6.2f} s  (median of {args.repeat})")
    print(f"all environments {stacks}, one process: {all_wall:6.2f} s")
    print(f"importing cdktf + providers           : {all_import:6.2f} s = {all_import / all_wall:.0%} of all")
    print(f"ratio all / one = {ratio:.2f}x (target <= {TARGET}x): {'OK' if ratio <= TARGET else 'MISSED'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
