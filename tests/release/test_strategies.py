"""Blue/green and canary releases on the real local environment (Docker engine, nginx router).

Every test uses its own flow name, so tests never see each other's deployments or routes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from release.config import ReleaseStrategy, SmokeTest
from release.errors import CheckFailed, UserError
from release.local_env.net import free_port
from release.release_state import ReleaseStore
from release.smoke import check_response, run_smoke_tests
from release.strategies import Rollout, RolloutFailed, new_deployment_name, roll_back, shift_map
from release.targets.base import DeploymentSpec
from release.targets.local import LocalTarget

pytestmark = [pytest.mark.docker]


stubs = sys.modules["release_test_stubs"]  # loaded by tests/release/conftest.py


def settings(**overrides: Any) -> ReleaseStrategy:
    base: dict[str, Any] = {
        "strategy": "bluegreen",
        "steps": [100],
        "step_wait_seconds": 1,
        "smoke_tests": stubs.SMOKE,
        "readiness_timeout_seconds": 30,
        "max_error_rate": 0.02,
        "max_p99_latency_ms": 3000,
    }
    return ReleaseStrategy(**{**base, **overrides})


def release(target: LocalTarget, store: ReleaseStore, image: str, version: str, **overrides: Any) -> Any:
    spec = DeploymentSpec(
        flow=target.flow, name=new_deployment_name(target.flow), image=image, env={"STUB_VERSION": version}
    )
    return Rollout(target, settings(**overrides), store, drain_s=0.5).run(spec)


@pytest.fixture
def store(target: LocalTarget, tmp_path: Path) -> ReleaseStore:
    return ReleaseStore(target.flow, "test", tmp_path)


def test_shift_map_shares_the_rest_in_proportion() -> None:
    assert shift_map({}, "new", 10) == {"new": 100}
    assert shift_map({"a": 100}, "new", 10) == {"a": 90, "new": 10}
    assert shift_map({"a": 50, "b": 50}, "new", 25) == {"a": 38, "b": 37, "new": 25}
    assert shift_map({"a": 70, "b": 30}, "new", 100) == {"a": 0, "b": 0, "new": 100}
    name = new_deployment_name("web_classification")
    assert name.startswith("wc-r") and len(name) <= 32 and name != new_deployment_name("web_classification")


def test_bluegreen_switch_under_load_loses_no_request(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str]
) -> None:
    first = release(target, store, images["good"], "v1")
    assert first.status == "live" and target.get_traffic() == {first.deployment: 100}

    load = stubs.Load(target.scoring_url(), max_requests=5000).start()
    load.wait_for(20)
    second = release(target, store, images["good"], "v2")
    after_switch = len(load.results)
    load.wait_for(after_switch + 30)
    load.stop()

    assert load.results and not load.failed, f"{len(load.failed)} of {len(load.results)} requests failed"
    versions = [version for _, _, version, _ in load.results]
    assert versions[0] == "v1" and versions[-1] == "v2"
    assert target.get_traffic() == {first.deployment: 0, second.deployment: 100}
    # the old deployment stays for the rollback window
    assert {d.name for d in target.list_deployments()} == {first.deployment, second.deployment}
    records = store.load()
    assert [r.status for r in records.history] == ["replaced", "live"] and records.active is None

    # a third release removes the one beyond the window, keeps the one it replaces
    third = release(target, store, images["good"], "v3")
    assert {d.name for d in target.list_deployments()} == {second.deployment, third.deployment}
    assert first.deployment in third.removed

    # rollback: traffic back on the previous release (smoke tested first)
    back = roll_back(target, settings(), store, drain_s=0.5)
    assert back.deployment == second.deployment
    # the release rolled back from is removed after draining: the target alone tells the history
    assert target.get_traffic() == {second.deployment: 100}
    assert {d.name for d in target.list_deployments()} == {second.deployment}
    assert store.load().live().deployment == second.deployment  # type: ignore[union-attr]


def test_canary_broken_under_real_traffic_rolls_back_by_itself(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str]
) -> None:
    good = release(target, store, images["good"], "v1")
    load = stubs.Load(target.scoring_url(), max_requests=5000).start()
    load.wait_for(10)
    with pytest.raises(RolloutFailed, match="error rate") as failure:
        release(
            target,
            store,
            images["broken_under_load"],
            "v2",
            strategy="ab",
            steps=[10, 50, 100],
            step_wait_seconds=20,
        )
    result = failure.value.result
    assert result.status == "rolled_back" and result.failed_check_at and result.rolled_back_at
    assert target.get_traffic() == {good.deployment: 100}  # canary removed after draining
    assert [d.name for d in target.list_deployments()] == [good.deployment]

    load.wait_for(len(load.results) + 50)
    load.stop()
    canary = result.deployment
    served = load.served_by(canary)
    assert [r for r in served if r[1] != 200], "the canary must have failed real traffic before the rollback"
    # every failure was the canary's: the good release never failed a request
    assert {r[3] for r in load.failed} <= {canary, ""}
    assert not [r for r in load.failed if r[3] == ""], "requests failed in the router itself"
    # event-based, no time slack: once the rollback is done, the canary serves nothing more,
    # and everything after its last answer is served by the good release
    last_canary = max(r[0] for r in served)
    after = [r for r in load.results if r[0] > last_canary]
    assert len(after) >= 30 and {(r[1], r[2], r[3]) for r in after} == {(200, "v1", good.deployment)}
    assert store.load().history[-1].status == "rolled_back"


def test_new_deployment_failing_its_smoke_test_never_gets_traffic(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str]
) -> None:
    good = release(target, store, images["good"], "v1")
    with pytest.raises(CheckFailed, match="smoke test"):
        release(target, store, images["broken"], "v2")
    assert target.get_traffic() == {good.deployment: 100}
    assert [d.name for d in target.list_deployments()] == [good.deployment]
    assert store.load().history[-1].status == "failed"


KILLED_CHILD = """
import os, signal, sys
from release.config import ReleaseStrategy, SmokeTest
from release.local_env.router import Router
from release.local_env.net import free_port
from release.release_state import ReleaseStore
from release.smoke import check_response, run_smoke_tests
from release.strategies import Rollout
from release.targets.base import DeploymentSpec
from release.targets.local import LocalTarget
flow, docker_host, state_dir, port, store_dir, name, image = sys.argv[1:]
target = LocalTarget(flow, docker_host=docker_host, router=Router(state_dir, int(port)), scope="test")
smoke = [SmokeTest(name="answers", request={"url": "x"}, expect_keys=["category"])]
settings = ReleaseStrategy(strategy="ab", steps=[10, 50, 100], smoke_tests=smoke, step_wait_seconds=1)
def kill(phase):
    if phase == "shifting:1":  # the canary holds 10 %; the step to 50 % is recorded
        os.kill(os.getpid(), signal.SIGKILL)
spec = DeploymentSpec(flow=flow, name=name, image=image)
Rollout(target, settings, ReleaseStore(flow, "test", __import__("pathlib").Path(store_dir)), on_phase=kill).run(spec)
"""


def test_canary_killed_mid_release_is_cleaned_up_by_the_next_run(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str], local_env: Any
) -> None:
    good = release(target, store, images["good"], "v1")
    name = new_deployment_name(target.flow)
    router = local_env.router
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_CHILD,
            target.flow,
            local_env.docker_host,
            str(router.state_dir),
            str(router.port),
            str(store.path.parent),
            name,
            images["good"],
        ],
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    assert target.get_traffic() == {good.deployment: 90, name: 10}
    assert store.load().active is not None

    done = Rollout(target, settings(), store, drain_s=0.2).recover()  # the lock died with the child
    assert done and "cleaned up" in done
    assert target.get_traffic() == {good.deployment: 100}
    assert [d.name for d in target.list_deployments()] == [good.deployment]
    records = store.load()
    assert records.active is None and records.history[-1].status == "abandoned"


def test_interrupted_after_the_switch_is_continued(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str]
) -> None:
    good = release(target, store, images["good"], "v1")

    def interrupt(phase: str) -> None:
        if phase == "finalizing":
            raise KeyboardInterrupt

    spec = DeploymentSpec(flow=target.flow, name=new_deployment_name(target.flow), image=images["good"])
    with pytest.raises(KeyboardInterrupt):
        Rollout(target, settings(), store, on_phase=interrupt).run(spec)
    newer = release(target, store, images["good"], "v3")  # the next run continues, then releases
    history = store.load().history
    assert [(r.deployment, r.status) for r in history[-3:]] == [
        (good.deployment, "replaced"),
        (spec.name, "replaced"),
        (newer.deployment, "live"),
    ]
    assert target.get_traffic() == {spec.name: 0, newer.deployment: 100}


def test_a_duplicate_deployment_name_touches_nothing(
    target: LocalTarget, store: ReleaseStore, images: dict[str, str]
) -> None:
    good = release(target, store, images["good"], "v1")
    spec = DeploymentSpec(flow=target.flow, name=good.deployment, image=images["good"])
    with pytest.raises(UserError, match="unique per release"):
        Rollout(target, settings(), store).run(spec)
    assert target.get_traffic() == {good.deployment: 100}
    assert requests.post(target.scoring_url(), json={}, timeout=10).status_code == 200


def test_smoke_checks_fail_for_real_and_readiness_waits_are_bounded() -> None:
    test = SmokeTest(
        name="t",
        request={},
        expect_keys=["category"],
        expect={"ok": True},
        expect_one_of={"category": ["a", "b"]},
    )
    assert check_response(test, 200, '{"category": "a", "ok": true}') is None
    assert "HTTP 500" in str(check_response(test, 500, "boom"))
    assert "not JSON" in str(check_response(test, 200, "<html>"))
    assert "lacks key(s) ['category']" in str(check_response(test, 200, '{"ok": true}'))
    assert "ok = False, expected True" in str(check_response(test, 200, '{"category": "a", "ok": false}'))
    assert "expected one of ['a', 'b']" in str(check_response(test, 200, '{"category": "c", "ok": true}'))
    nothing = f"http://127.0.0.1:{free_port()}/score"  # nothing listens there
    with pytest.raises(CheckFailed, match="was not ready within"):
        run_smoke_tests(nothing, [test], readiness_timeout_s=1.0)
