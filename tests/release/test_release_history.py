"""The release history is rebuilt from what the target holds (no docker needed: pure rules).

A CI agent starts with an empty ``.genaiops/``; :func:`release.release_state.reconcile` must
then tell the live release, the rollback candidates and the rolled-back releases from the
deployments, their creation labels and the traffic alone.
"""

from __future__ import annotations

from release.release_state import CREATED_LABEL, FlowReleases, ReleaseRecord, created_at, reconcile
from release.targets.base import DeploymentInfo


def info(name: str, traffic: int, created: float | None = None) -> DeploymentInfo:
    labels = {CREATED_LABEL: f"{created:.3f}"} if created is not None else {}
    return DeploymentInfo(name, f"reg/{name}@sha256:00", "Succeeded", traffic, labels)


def statuses(state: FlowReleases) -> dict[str, str]:
    return {r.deployment: r.status for r in state.history}


def test_empty_record_is_rebuilt_from_traffic_and_creation_order() -> None:
    state = FlowReleases("wc", "dev")
    changes = reconcile(state, [info("b", 100, 20.0), info("a", 0, 10.0), info("c", 0, 30.0)])
    assert statuses(state) == {"a": "replaced", "b": "live", "c": "rolled_back"}
    assert state.live() is not None and state.live().deployment == "b"  # type: ignore[union-attr]
    assert len(changes) == 3
    # history is in time order with the live release last, so [-1] of the replaced is the newest
    assert [r.deployment for r in state.history] == ["a", "c", "b"]


def test_creation_order_beats_name_order() -> None:
    state = FlowReleases("wc", "dev")
    reconcile(state, [info("zz-old", 0, 1.0), info("aa-new", 100, 2.0)])
    assert statuses(state) == {"zz-old": "replaced", "aa-new": "live"}


def test_name_stamp_is_the_fallback_creation_time() -> None:
    older = DeploymentInfo("wc-r20261130t080000-ab12", "i", "Succeeded", 0)
    newer = DeploymentInfo("wc-r20261130t090000-0001", "i", "Succeeded", 100)
    assert created_at(older) is not None and created_at(older) < created_at(newer)  # type: ignore[operator]
    state = FlowReleases("wc", "dev")
    reconcile(state, [newer, older])
    assert statuses(state) == {older.name: "replaced", newer.name: "live"}


def test_the_target_wins_over_a_stale_cached_record() -> None:
    """Another run rolled back: the cached live release is now rolled back on the target."""
    state = FlowReleases(
        "wc",
        "dev",
        history=[
            ReleaseRecord("a", "a", "i", "replaced", 1, 2),
            ReleaseRecord("b", "b", "i", "live", 3, 4),
        ],
    )
    changes = reconcile(state, [info("a", 100, 1.0), info("b", 0, 3.0)])
    assert statuses(state) == {"a": "live", "b": "rolled_back"}
    assert any("the target serves a" in c for c in changes)


def test_nothing_changes_when_the_record_agrees_or_nothing_serves() -> None:
    state = FlowReleases(
        "wc",
        "dev",
        history=[ReleaseRecord("a", "a", "i", "replaced", 1, 2), ReleaseRecord("b", "b", "i", "live", 3, 4)],
    )
    assert reconcile(state, [info("a", 0, 1.0), info("b", 100, 3.0)]) == []
    assert reconcile(FlowReleases("wc", "dev"), [info("a", 0, 1.0)]) == []
    assert reconcile(FlowReleases("wc", "dev"), []) == []
