"""Rehearsal stand-in for the synth/scan half of `make plan` (tests/pipelines/rehearsal.py only).

`genaiops plan --env E` is synth + checkov scan + the Terraform half. Synth and scan take tens of
seconds per environment and are covered by tests/infra, so the rehearsal synthesizes each stack
once per test session (the real `infra.app.synth`) and this script copies it into the clone's
`cdktf.out/stacks/E/`, then runs the Terraform half exactly as `genaiops plan` does
(`infra.terraform.preflight` + `infra.terraform.plan`: init, plan -out, show, encryption).
Usage: python rehearsal_plan.py ENV PRESYNTHESIZED_STACKS_DIR
"""

import shutil
import sys
from pathlib import Path

from infra import terraform
from release.config import REPO_ROOT, load_config
from release.errors import UserError

env, presynth = sys.argv[1], Path(sys.argv[2])
stack = REPO_ROOT / "cdktf.out" / "stacks" / env
stack.mkdir(parents=True, exist_ok=True)
shutil.copyfile(presynth / env / "cdk.tf.json", stack / "cdk.tf.json")
try:
    cfg = load_config(env)
    print(terraform.plan(cfg, stack, terraform.preflight()))
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
