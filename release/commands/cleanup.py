"""``genaiops cleanup --env <env> [--older-than 6h] [--dry-run]``: delete the resource groups that
integration runs left behind (tagged ``genaiops-run-id``) once they are expired
(release/azure/testgroups.py). Groups without that tag are never touched."""

from __future__ import annotations

import argparse

from release.commands.common import add_env


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("cleanup", help="delete expired integration-test resource groups (by tag)")
    add_env(parser, required=True)
    parser.add_argument(
        "--older-than",
        default=None,
        help="delete test groups older than this (e.g. 6h, 90m, 2d); default: each group's own max age tag",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    parser.set_defaults(handler=_cleanup)


def _cleanup(args: argparse.Namespace) -> int:
    from release.azure import testgroups
    from release.azure.clients import AzureContext
    from release.commands.common import env_config

    older_than = testgroups.parse_duration(args.older_than) if args.older_than else None
    cfg = env_config(args)
    ctx = AzureContext.from_config(cfg)
    removed = testgroups.cleanup(ctx, older_than=older_than, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for group in removed:
        print(f"{verb} {group.name} (run {group.run_id}, created {group.created_at:%Y-%m-%dT%H:%MZ})")
    print(f"cleanup: {verb} {len(removed)} expired test resource group(s)")
    return 0
