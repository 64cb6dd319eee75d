"""The CDKTF app entry point (``cdktf.json``: ``.venv/bin/python infra/main.py``).

Synthesizes every Azure environment in ``config/`` (or those named in ``$GENAIOPS_ENVS``,
comma-separated) into ``cdktf.out/stacks/<env>/cdk.tf.json``. ``genaiops synth`` is the
usual way in; this file exists for the cdktf CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.app import synth
from release.config import available_environments, load_config
from release.errors import UserError


def main() -> int:
    names = [n for n in os.environ.get("GENAIOPS_ENVS", "").split(",") if n]
    configs = [load_config(env) for env in (names or available_environments())]
    azure = [cfg for cfg in configs if cfg.kind == "azure"]
    for path in synth(azure).values():
        print(f"synthesized {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
