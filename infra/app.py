"""Build and synthesize the CDKTF app: every environment in ONE process (providers load once)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.validate import check
from release.config import REPO_ROOT, EnvironmentConfig

OUT_DIR = REPO_ROOT / "cdktf.out"


def out_dir() -> Path:
    """``cdktf.out/`` at the repository root, or ``$GENAIOPS_CDKTF_OUT`` (tests)."""
    override = os.environ.get("GENAIOPS_CDKTF_OUT")
    return Path(override) if override else OUT_DIR


def stack_dir(env: str, outdir: Path | None = None) -> Path:
    return (outdir or out_dir()) / "stacks" / env


def stack_file(env: str, outdir: Path | None = None) -> Path:
    return stack_dir(env, outdir) / "cdk.tf.json"


def synth(
    configs: Sequence[EnvironmentConfig],
    outdir: Path | None = None,
    customize: Callable[[object], None] | None = None,
) -> dict[str, Path]:
    """Synthesize one stack per config into ``<outdir>/stacks/<env>/cdk.tf.json``.

    Every config is checked before anything is written. ``customize`` receives each
    :class:`~infra.stacks.environment.EnvironmentStack` before synthesis (tests use it).
    """
    for cfg in configs:
        check(cfg)
    import cdktf

    from infra.stacks.environment import EnvironmentStack

    target = outdir or out_dir()
    app = cdktf.App(outdir=str(target), stack_traces=False)
    stacks = [EnvironmentStack(app, cfg) for cfg in configs]
    if customize is not None:
        for stack in stacks:
            customize(stack)
    for cfg in configs:  # a stale stack from an earlier run must not survive a failed synth
        shutil.rmtree(stack_dir(cfg.environment, target), ignore_errors=True)
    app.synth()
    return {cfg.environment: stack_file(cfg.environment, target) for cfg in configs}
