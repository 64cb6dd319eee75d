"""Rollout benchmark on the real local environment (Docker engine, nginx router).

Measures, in one run:
- blue/green: time from release start to 100 % traffic, as a ratio of a bare deployment
  (container start + health) measured in the same run, and failed requests under load;
- a canary that passes its smoke test but fails real traffic (steps 10, 50, 100): time from the
  first failed check to traffic back on the old version, and failed requests before rollback
  versus the canary's traffic share.
Targets: 0 failed requests during blue/green; rollback within 15 s of the first failed check;
canary failures (counted on the requests the canary itself served, by the router's response header)
no more than its share (10 %) of the requests sent while it held traffic.

    .venv/bin/python bench/rollout.py      # uses (and starts if needed) config/local.yaml's environment
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from release.config import ReleaseStrategy, load_config  # noqa: E402
from release.errors import CheckFailed  # noqa: E402
from release.local_env.environment import LocalEnvironment  # noqa: E402
from release.release_state import ReleaseStore  # noqa: E402
from release.strategies import Rollout, new_deployment_name  # noqa: E402
from release.targets.base import DeploymentSpec  # noqa: E402
from release.targets.local import LocalTarget  # noqa: E402


def load_stubs() -> ModuleType:
    path = ROOT / "tests" / "release" / "fixtures" / "stub_server" / "stubs.py"
    spec = importlib.util.spec_from_file_location("release_test_stubs", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def settings(stubs: ModuleType, **overrides: Any) -> ReleaseStrategy:
    base: dict[str, Any] = {
        "strategy": "bluegreen",
        "steps": [100],
        "step_wait_seconds": 2,
        "smoke_tests": stubs.SMOKE,
        "readiness_timeout_seconds": 60,
        "max_error_rate": 0.02,
        "max_p99_latency_ms": 3000,
    }
    return ReleaseStrategy(**{**base, **overrides})


def spec(target: LocalTarget, image: str, version: str) -> DeploymentSpec:
    return DeploymentSpec(target.flow, new_deployment_name(target.flow), image, env={"STUB_VERSION": version})


def main() -> int:
    stubs = load_stubs()
    cfg = load_config("local")
    env = LocalEnvironment(cfg.local_settings(), log=lambda line: print(f"  [local] {line}"))
    up = env.up(only=["docker", "router"])
    docker_host = env.docker_host()
    assert docker_host
    images = stubs.build_stub_images(docker_host, cfg.local_settings().base_image)
    flow = f"bench_{secrets.token_hex(3)}"
    target = LocalTarget(flow, docker_host=docker_host, router=env.router, scope="bench")
    store = ReleaseStore(flow, "bench", ROOT / ".genaiops" / "bench" / "releases")
    ok = True
    try:
        # baseline: a bare deployment (container start + health), no strategy
        started = time.monotonic()
        target.create_or_update(spec(target, images["good"], "base"), timeout_s=60)
        bare_s = time.monotonic() - started
        for info in target.list_deployments():
            target.delete(info.name)

        Rollout(target, settings(stubs), store, drain_s=1).run(spec(target, images["good"], "v1"))
        load = stubs.Load(target.scoring_url(), max_requests=50000).start()
        load.wait_for(50)
        result = Rollout(target, settings(stubs), store, drain_s=1).run(spec(target, images["good"], "v2"))
        load.wait_for(len(load.results) + 50)
        load.stop()
        assert result.full_traffic_at is not None
        to_full_s = result.full_traffic_at - result.started_at
        bg_failed = len(load.failed)
        print(
            f"blue/green: start -> 100 % traffic {to_full_s:.2f} s; bare deployment {bare_s:.2f} s "
            f"(ratio {to_full_s / bare_s:.2f}x); whole release {result.live_at - result.started_at:.2f} s"
        )
        print(f"blue/green under load: {bg_failed} failed of {len(load.results)} requests (target 0)")
        ok &= bg_failed == 0

        load = stubs.Load(target.scoring_url(), max_requests=50000).start()
        load.wait_for(50)
        canary = settings(stubs, strategy="ab", steps=[10, 50, 100], step_wait_seconds=30)
        try:
            Rollout(target, canary, store, drain_s=1).run(spec(target, images["broken_under_load"], "v3"))
            print("broken canary: NOT rolled back (unexpected)")
            ok = False
        except CheckFailed as exc:
            failed = getattr(exc, "result", None)
            assert failed is not None and failed.failed_check_at and failed.rolled_back_at
            load.wait_for(len(load.results) + 100)
            load.stop()
            back_s = failed.rolled_back_at - failed.failed_check_at
            # only the requests the canary itself served (the router says who served each one),
            # against all requests sent while it held traffic: its share of real traffic
            served = load.served_by(failed.deployment)
            first_served = min((r[0] for r in served), default=failed.rolled_back_at)
            canary_window = [r for r in load.results if first_served <= r[0] <= failed.rolled_back_at]
            failed_before = [r for r in served if r[1] != 200]
            share = len(failed_before) / max(1, len(canary_window))
            last_served = max((r[0] for r in served), default=failed.rolled_back_at)
            after = [r for r in load.results if r[0] > last_served]
            print(
                f"broken canary: first failed check -> traffic back on v2 in {back_s:.2f} s (target <= 15 s)"
            )
            print(
                f"broken canary: it served {len(served)} requests and failed {len(failed_before)}, of "
                f"{len(canary_window)} sent while it held traffic = {share:.1%} (target <= 10 %, its share); "
                f"{len([r for r in after if r[1] != 200])} failed of {len(after)} after its last answer"
            )
            ok &= back_s <= 15 and share <= 0.10 and all(r[1] == 200 for r in after)
    finally:
        env.router.set_routes(flow, {})
        for info in target.list_deployments():
            target.delete(info.name)
        if up.started:
            env.down()
    print("rollout benchmark:", "all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
