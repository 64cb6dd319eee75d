"""``genaiops release | deploy | status | rollback | smoke``: ship what passed the gate, safely.

* ``release --flow F --env E``: the main job (local up, experiment, evaluate, gate, register,
  build, push, deploy, smoke, traffic); prints the scoring URL and the reports.
* ``deploy --flow F --env E [--image REF]``: deploy + smoke + traffic of an image already pushed
  (default: the environment's last push), with the flow's strategy.
* ``status [--flow F] --env E``: per flow: deployments, images, traffic, health, release record.
* ``rollback --flow F --env E``: traffic back on the previous release (smoke tested first).
* ``smoke --flow F --env E [--deployment D]``: the flow's smoke tests through the endpoint or on
  one deployment.

``build``, ``push`` and ``promote`` live in :mod:`release.commands.image_cmd`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from release.commands.common import add_env, add_flow
from release.config import EnvironmentConfig, load_config
from release.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    release = sub.add_parser("release", help="the main job: experiment..gate..build..deploy..smoke..traffic")
    add_env(release)
    add_flow(release)
    release.add_argument(
        "--reports-dir", type=Path, default=None, help="where reports/<flow>/... go (default: reports/)"
    )
    release.set_defaults(handler=_release)

    deploy = sub.add_parser(
        "deploy", help="deploy + smoke + traffic shift of a pushed image (flow's strategy)"
    )
    add_env(deploy)
    add_flow(deploy)
    deploy.add_argument("--image", default=None, help="pinned image reference (default: the last push)")
    deploy.set_defaults(handler=_deploy)

    status = sub.add_parser("status", help="deployments, images, traffic and health per flow")
    add_env(status)
    add_flow(status, required=False)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    rollback = sub.add_parser("rollback", help="put traffic back on the previous release")
    add_env(rollback)
    add_flow(rollback)
    rollback.set_defaults(handler=_rollback)

    smoke = sub.add_parser("smoke", help="run the flow's smoke tests (endpoint, or one deployment)")
    add_env(smoke)
    add_flow(smoke)
    smoke.add_argument("--deployment", default=None, help="test this deployment directly")
    smoke.set_defaults(handler=_smoke)


def _release(args: argparse.Namespace) -> int:
    from release.release_job import ReleaseJob

    job = ReleaseJob(
        args.flow, args.env, reports_dir=args.reports_dir.resolve() if args.reports_dir else None
    )
    report = job.run()
    print(f"released {args.flow} to {args.env}: {job.report.deployment} serves 100 % of traffic")
    print(f"scoring URL: {job.report.scoring_url}")
    print(f"evaluation report: {job.report.evaluation_report}")
    print(f"release report: {report}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from release.release_job import flow_settings, roll_out

    cfg = load_config(args.env)
    flow_settings(cfg, args.flow)
    image = args.image or _last_push(cfg, args.flow)
    target, result = roll_out(cfg, args.flow, image)
    print(f"deployed {image} as {result.deployment}; traffic: {_traffic(result.traffic)}")
    print(f"scoring URL: {target.scoring_url()}")
    return 0


def _last_push(cfg: EnvironmentConfig, flow: str) -> str:
    from release.image import load_record

    record = load_record(cfg.environment, flow, "push")
    if record is None:
        raise UserError(
            f"flow {flow!r} has no pushed image in environment {cfg.environment!r}; run "
            f"'genaiops build --flow {flow} --env {cfg.environment}' and 'genaiops push ...' or give --image"
        )
    return str(record["reference"])


def _rollback(args: argparse.Namespace) -> int:
    from release.release_job import flow_settings, open_target, release_store
    from release.strategies import roll_back

    cfg = load_config(args.env)
    settings = flow_settings(cfg, args.flow)
    target = open_target(cfg, args.flow)
    result = roll_back(target, settings.release, release_store(cfg, args.flow), progress=print)
    print(f"rolled back {args.flow} in {args.env}: {result.deployment} serves 100 % of traffic")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from release.release_job import flow_settings, open_target
    from release.smoke import run_smoke_tests

    cfg = load_config(args.env)
    settings = flow_settings(cfg, args.flow).release
    target = open_target(cfg, args.flow)
    url = target.scoring_url(args.deployment)
    results = run_smoke_tests(
        url,
        settings.smoke_tests,
        headers=target.auth_headers(args.deployment),
        readiness_timeout_s=settings.readiness_timeout_seconds,
        what=f"deployment {args.deployment}" if args.deployment else f"endpoint of {args.flow}",
    )
    for result in results:
        print(f"ok  {result.name} ({result.elapsed_ms:.0f} ms)")
    print(f"{len(results)} smoke test(s) passed on {url}")
    return 0


def flow_status(cfg: EnvironmentConfig, flow: str) -> dict[str, Any]:
    """Deployments (image, state, traffic, health) and the release record of one flow."""
    from release.release_job import open_target, release_store

    target = open_target(cfg, flow)
    health = getattr(target, "health", None)
    infos = target.list_deployments()
    deployments = [
        {
            "name": info.name,
            "image": info.image,
            "state": info.state,
            "traffic": info.traffic,
            "health": health(info.name) if callable(health) else info.state,
        }
        for info in infos
    ]
    from release.release_state import reconcile

    # read-only: the cached record brought in line with what the target holds (no lock, no
    # write, so status works while a release runs and from an empty .genaiops/)
    record = release_store(cfg, flow).load()
    reconcile(record, infos)
    live = record.live()
    return {
        "flow": flow,
        "environment": cfg.environment,
        "scoring_url": target.scoring_url(),
        "deployments": deployments,
        "live_release": live.deployment if live else None,
        "release_in_progress": record.active.deployment if record.active else None,
        "traffic_ok": sum(info.traffic for info in infos) == 100,
    }


def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args.env)
    flows = [args.flow] if args.flow else sorted(cfg.flows)
    statuses = [flow_status(cfg, flow) for flow in flows]
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    for status in statuses:
        print(f"{status['flow']} ({status['environment']}): {status['scoring_url']}")
        if not status["deployments"]:
            print("  no deployments")
        for d in status["deployments"]:
            mark = "*" if d["name"] == status["live_release"] else " "
            print(f" {mark}{d['name']:<28} {d['traffic']:>3} %  {d['health']:<10} {d['image']}")
        if status["release_in_progress"]:
            print(
                f"  interrupted/ongoing release: {status['release_in_progress']} "
                "(the next run finishes or cleans it up)"
            )
        if status["deployments"] and not status["traffic_ok"]:
            print("  WARNING: traffic does not sum to 100 %; run 'genaiops rollback'")
    return 0


def _traffic(traffic: dict[str, int]) -> str:
    return ", ".join(f"{name}={share}%" for name, share in sorted(traffic.items()) if share)
