"""``genaiops doctor --env <env>``: preflight against the real subscription (release/azure/doctor.py).

Exit codes: 0 = no blocker, 1 = at least one blocker (each printed with its fix),
2 = no Azure credentials (one line) or a config error.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from release.commands.common import add_env

if TYPE_CHECKING:
    from release.azure.clients import AzureContext
    from release.config import EnvironmentConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "doctor",
        help="preflight on Azure: roles, network reachability, providers, quota, Azure OpenAI deployments",
    )
    add_env(parser, required=True)
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from release.azure.clients import AzureContext
    from release.commands.common import env_config

    cfg = env_config(args)
    return report(cfg, AzureContext.from_config(cfg))


def report(cfg: EnvironmentConfig, ctx: AzureContext) -> int:
    """Run every check, print one line per finding (fixes indented), return the exit code."""
    from release.azure import doctor

    findings = doctor.run(cfg, ctx)
    for finding in findings:
        print(finding.line())
    blocking = doctor.blockers(findings)
    if blocking:
        print(f"doctor: {len(blocking)} blocker(s) in {cfg.environment}; fix them before plan/apply/release")
        return 1
    print(f"doctor: {cfg.environment} is ready ({len(findings)} checks)")
    return 0
