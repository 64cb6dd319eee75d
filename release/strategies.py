"""Blue/green and A/B (canary) releases, written once against :class:`release.targets.base.Target`.

- **blue/green**: the new deployment starts at 0 %, is smoke tested on its own URL, then takes
  100 % in one switch; real traffic is watched for ``step_wait_seconds`` and the old deployment
  is kept for the rollback window.
- **ab** (canary): traffic moves in the configured steps (e.g. 10, 50, 100); between steps the
  new deployment is smoke tested again and its real traffic (``Target.traffic_metrics``) must
  stay under ``max_error_rate`` and ``max_p99_latency_ms``.

When a check fails, traffic goes back to the map it had before the release, by itself, and
:class:`CheckFailed` is raised (non-zero exit). Every traffic map is validated before anything
is touched. Progress is recorded in :mod:`release.release_state`, so a run after an interruption
finishes a release that already holds 100 % and otherwise puts traffic back and cleans up.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from release.config import ReleaseStrategy
from release.errors import CheckFailed, UserError
from release.release_state import (
    CREATED_LABEL,
    ActiveRelease,
    FlowReleases,
    ReleaseRecord,
    ReleaseStore,
    now,
    reconcile,
)
from release.smoke import run_one, run_smoke_tests
from release.targets.base import DeploymentSpec, Target, TrafficError, TrafficMetrics, validate_traffic

log = logging.getLogger(__name__)

METRICS_POLL_S = 0.5
MIN_REQUESTS_TO_JUDGE = 5  # a verdict before the step ends needs at least this many requests
DRAIN_S = 2.0  # time for in-flight requests before a deployment that just lost traffic is removed
CREATE_TIMEOUT_S = 600.0

Progress = Callable[[str], None]


def new_deployment_name(flow: str, when: datetime | None = None) -> str:
    """Unique per release, valid everywhere (Azure: ``^[a-z][a-z0-9-]{0,31}$``)."""
    initials = "".join(part[0] for part in flow.replace("-", "_").split("_") if part)[:4].lower() or "f"
    if not initials[0].isalpha():
        initials = f"f{initials}"[:4]
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dt%H%M%S")
    return f"{initials}-r{stamp}-{secrets.token_hex(2)}"


def shift_map(previous: dict[str, int], new: str, percent: int) -> dict[str, int]:
    """``new`` gets ``percent``; the rest is shared among ``previous`` in proportion, summing to 100."""
    rest = 100 - percent
    weights = {name: share for name, share in previous.items() if name != new}
    total = sum(weights.values())
    out = {name: 0 for name in weights}
    if total and rest:
        exact = {name: rest * share / total for name, share in weights.items()}
        out = {name: int(value) for name, value in exact.items()}
        left = rest - sum(out.values())
        for name in sorted(exact, key=lambda n: exact[n] - out[n], reverse=True)[:left]:
            out[name] += 1
    out[new] = percent if total else 100
    return out


@dataclass
class RolloutResult:
    deployment: str
    status: str  # live | failed | rolled_back
    traffic: dict[str, int]
    started_at: float
    live_at: float | None = None
    full_traffic_at: float | None = None  # when the new deployment first held 100 %
    failed_check_at: float | None = None
    rolled_back_at: float | None = None
    removed: list[str] = field(default_factory=list)
    detail: str = ""


class RolloutFailed(CheckFailed):
    """A check failed during a release; traffic is back where it was. ``result`` has the times."""

    def __init__(self, message: str, result: RolloutResult) -> None:
        super().__init__(message)
        self.result = result


class Rollout:
    """One release of one deployment through a strategy, on any target."""

    def __init__(
        self,
        target: Target,
        settings: ReleaseStrategy,
        store: ReleaseStore,
        *,
        progress: Progress | None = None,
        on_phase: Callable[[str], None] | None = None,
        drain_s: float = DRAIN_S,
        create_timeout_s: float = CREATE_TIMEOUT_S,
    ) -> None:
        self.target = target
        self.settings = settings
        self.store = store
        self.progress: Progress = progress or log.info
        self.on_phase = on_phase  # called after each recorded phase (tests use it to interrupt)
        self.drain_s = drain_s
        self.create_timeout_s = create_timeout_s

    # ------------------------------------------------------------------ public entry points
    def run(self, spec: DeploymentSpec) -> RolloutResult:
        with self.store:
            state = self.load_state()
            self._recover(state)
            return self._release(state, spec)

    def recover(self) -> str | None:
        """Continue or clean up an interrupted release; returns what was done, if anything."""
        with self.store:
            return self._recover(self.load_state())

    def load_state(self) -> FlowReleases:
        """The release record, made to agree with the target (the source of truth)."""
        return load_reconciled(self.target, self.store, self.progress)

    # ------------------------------------------------------------------ the release
    def _release(self, state: FlowReleases, spec: DeploymentSpec) -> RolloutResult:
        target, settings = self.target, self.settings
        # the creation time travels with the deployment, so the history can be rebuilt from the target
        spec = replace(spec, labels={CREATED_LABEL: f"{now():.3f}", **spec.labels})
        target.ensure_endpoint()
        known = {d.name for d in target.list_deployments()}
        if spec.name in known:
            raise UserError(
                f"deployment {spec.name!r} already exists; deployment names are unique per release"
            )
        previous = self._current_traffic(known)
        # Validate every map this release will apply before touching anything.
        steps = list(settings.steps) if settings.strategy == "ab" and previous else [100]
        plan = [shift_map(previous, spec.name, pct) for pct in steps]
        for traffic in plan:
            validate_traffic(traffic, known | {spec.name})
        if previous:
            validate_traffic(previous, known)

        result = RolloutResult(spec.name, "failed", dict(previous), started_at=now())
        state.active = ActiveRelease(
            release_id=spec.labels.get("genaiops.release", spec.name),
            deployment=spec.name,
            image=spec.image,
            strategy=settings.strategy,
            phase="creating",
            previous_traffic=dict(previous),
            started_at=result.started_at,
            labels=dict(spec.labels),
        )
        self._phase(state, "creating")
        timer = time.monotonic()
        try:
            target.create_or_update(spec, timeout_s=self.create_timeout_s)
        except Exception as exc:
            self._abandon(state, spec.name, result, f"deployment failed: {exc}")
            raise
        self.progress(f"  deployment {spec.name} created at 0 % ({time.monotonic() - timer:.1f} s)")

        self._phase(state, "smoke")
        timer = time.monotonic()
        try:
            self._smoke(spec.name)
        except CheckFailed as exc:
            self._abandon(state, spec.name, result, str(exc))
            raise
        self.progress(f"  smoke tests passed on {spec.name} directly ({time.monotonic() - timer:.1f} s)")

        for index, traffic in enumerate(plan):
            assert state.active is not None
            state.active.step = index
            self._phase(state, "shifting")
            step_started = now()
            try:
                target.set_traffic(traffic)
                result.traffic = dict(traffic)
                if traffic.get(spec.name) == 100:
                    result.full_traffic_at = now()
                self.progress(f"  traffic {_fmt(traffic)}")
                problem = self._watch(spec.name, step_started, is_last=index == len(plan) - 1, result=result)
            except Exception as exc:  # an error mid-shift (router, metrics, API): go back, then report it
                result.failed_check_at = result.failed_check_at or now()
                if previous:
                    self._roll_back(state, spec.name, previous, result, f"error during the shift: {exc}")
                raise
            if problem is not None:
                self._roll_back(state, spec.name, previous, result, problem)
                where = _fmt(previous) if previous else "the new deployment (there is no earlier one)"
                raise RolloutFailed(
                    f"release of {spec.name} failed at {steps[index]} % ({problem}); traffic is on {where}",
                    result,
                )
        result.live_at = now()
        self._phase(state, "finalizing")
        result.removed = self._finalize(state, spec.name)
        result.status = "live"
        return result

    def _current_traffic(self, known: set[str]) -> dict[str, int]:
        traffic = {name: share for name, share in self.target.get_traffic().items() if share > 0}
        if not traffic:
            return {}
        try:
            return validate_traffic(traffic, known)
        except TrafficError as exc:
            raise UserError(
                f"flow {self.target.flow!r}: the endpoint's current traffic is invalid ({exc}); "
                "fix it with 'genaiops rollback' first"
            ) from None

    def _smoke(self, deployment: str | None) -> None:
        what = f"deployment {deployment}" if deployment else f"endpoint of {self.target.flow}"
        run_smoke_tests(
            self.target.scoring_url(deployment),
            self.settings.smoke_tests,
            headers=self.target.auth_headers(deployment),
            readiness_timeout_s=self.settings.readiness_timeout_seconds,
            what=what,
        )

    def _watch(self, deployment: str, since: float, *, is_last: bool, result: RolloutResult) -> str | None:
        """Check the new deployment during one step; return why it failed, or None.

        A step is never judged on no traffic: when the target measures traffic and the new
        deployment served fewer than ``min_requests_per_step`` requests, probe requests (the
        smoke requests) are sent first if ``probe_traffic`` is on; a step that still saw too few
        fails with "no traffic observed".
        """
        try:
            self._smoke(deployment)
            if is_last and self.settings.smoke_tests:
                self._smoke(None)  # through the router / endpoint as clients see it
        except CheckFailed as exc:
            result.failed_check_at = now()
            return str(exc)
        self._probe(deployment, since)
        deadline = time.monotonic() + self.settings.step_wait_seconds
        while True:
            final = time.monotonic() >= deadline
            metrics = self._observed(deployment, since)
            if metrics is not None and (metrics.requests >= MIN_REQUESTS_TO_JUDGE or final):
                problem = None
                if metrics.requests and metrics.error_rate > self.settings.max_error_rate:
                    problem = (
                        f"error rate {metrics.error_rate:.1%} over {metrics.requests} requests "
                        f"exceeds {self.settings.max_error_rate:.1%}"
                    )
                elif metrics.requests and metrics.p99_ms > self.settings.max_p99_latency_ms:
                    problem = (
                        f"p99 latency {metrics.p99_ms:.0f} ms exceeds {self.settings.max_p99_latency_ms} ms"
                    )
                if problem:
                    result.failed_check_at = now()
                    return problem
            if final:
                if metrics is not None:
                    self.progress(
                        f"  real traffic on {deployment}: {metrics.requests} requests, "
                        f"{metrics.error_rate:.1%} errors, p99 {metrics.p99_ms:.0f} ms"
                    )
                    wanted = self.settings.min_requests_per_step
                    if metrics.requests < wanted:
                        result.failed_check_at = now()
                        return (
                            f"no traffic observed on {deployment}: {metrics.requests} request(s) in the "
                            f"step, fewer than min_requests_per_step={wanted} (send traffic, enable "
                            "probe_traffic with smoke tests, or lengthen step_wait_seconds: telemetry "
                            "can arrive minutes late)"
                        )
                return None
            time.sleep(min(METRICS_POLL_S, max(0.0, deadline - time.monotonic())))

    def _observed(self, deployment: str, since: float) -> TrafficMetrics | None:
        """The deployment's traffic since ``since``; zero requests when the target measures
        traffic and has no rows for it; None when the target has no traffic source."""
        metrics = self.target.traffic_metrics(since).get(deployment)
        if metrics is None and self.target.measures_traffic:
            return TrafficMetrics(0, 0, 0.0)
        return metrics

    def _probe(self, deployment: str, since: float) -> int:
        """Send probe requests (the smoke requests, in turn) so the step has traffic to judge.

        Bounded by ``max_probe_requests``. On a pinned route (Azure ML's deployment header, an
        App Service slot's host) exactly the missing number is sent; on a weighted route (the
        local router) probes go on until the metrics show enough. Returns how many were sent.
        """
        wanted = self.settings.min_requests_per_step
        tests = self.settings.smoke_tests
        if not (self.target.measures_traffic and wanted and self.settings.probe_traffic and tests):
            return 0
        url, headers, pinned = self.target.probe_route(deployment)
        budget = self.settings.max_probe_requests
        sent = 0
        seen = self._observed(deployment, since)
        missing = wanted - (seen.requests if seen else 0)
        while missing > 0 and sent < budget:
            run_one(url, tests[sent % len(tests)], headers)
            sent += 1
            if pinned:
                missing -= 1
            else:
                seen = self._observed(deployment, since)
                missing = wanted - (seen.requests if seen else 0)
        if sent:
            self.progress(f"  sent {sent} probe request(s) so that {deployment} has traffic to judge")
        return sent

    def _roll_back(
        self, state: FlowReleases, deployment: str, previous: dict[str, int], result: RolloutResult, why: str
    ) -> None:
        if previous:
            back = {**previous, deployment: 0}
            self.target.set_traffic(back)
            result.rolled_back_at = now()
            result.traffic = back
            self.progress(f"  check failed ({why}); traffic back to {_fmt(previous)}")
            result.status = "rolled_back"
            self._remove_after_drain(deployment)
            self._close(state, deployment, "rolled_back", why)
        else:
            # First release: there is nothing to go back to; keep traffic where it is.
            result.status = "failed"
            self._close(state, deployment, "failed", f"{why} (no earlier deployment to go back to)")

    def _abandon(self, state: FlowReleases, deployment: str, result: RolloutResult, why: str) -> None:
        """The new deployment never got traffic: remove it and record why."""
        try:
            self.target.delete(deployment)
        except Exception as exc:  # keep the original error; say what is left over
            log.warning("could not remove deployment %s: %s", deployment, exc)
        result.status = "failed"
        self._close(state, deployment, "failed", why)

    def _finalize(self, state: FlowReleases, deployment: str) -> list[str]:
        """Record the release as live and remove deployments beyond the rollback window."""
        assert state.active is not None
        active = state.active
        state.record(
            ReleaseRecord(
                active.release_id,
                deployment,
                active.image,
                "live",
                active.started_at,
                now(),
                labels=active.labels,
            )
        )
        state.active = None
        self.store.save(state)
        return self._prune(state)

    def _prune(self, state: FlowReleases) -> list[str]:
        """Keep the live deployment and, within the rollback window, the one it replaced."""
        keep = set()
        live = state.live()
        if live:
            keep.add(live.deployment)
        window_s = self.settings.rollback_window_minutes * 60
        replaced = [r for r in state.history if r.status == "replaced"]
        if replaced and window_s and live and now() - live.finished_at < window_s:
            keep.add(replaced[-1].deployment)
        traffic = self.target.get_traffic()
        removed = []
        for info in self.target.list_deployments():
            if info.name in keep or traffic.get(info.name, 0) > 0:
                continue
            self.target.delete(info.name)
            removed.append(info.name)
        if removed:
            self.progress(f"  removed old deployment(s) beyond the rollback window: {', '.join(removed)}")
        return removed

    def _remove_after_drain(self, deployment: str) -> None:
        time.sleep(self.drain_s)
        try:
            self.target.delete(deployment)
        except Exception as exc:
            log.warning("could not remove deployment %s: %s", deployment, exc)

    def _close(self, state: FlowReleases, deployment: str, status: str, why: str) -> None:
        active = state.active
        if active is not None:
            state.record(
                ReleaseRecord(
                    active.release_id,
                    deployment,
                    active.image,
                    status,
                    active.started_at,
                    now(),
                    why,
                    active.labels,
                )
            )
        state.active = None
        self.store.save(state)

    def _phase(self, state: FlowReleases, phase: str) -> None:
        assert state.active is not None
        state.active.phase = phase
        self.store.save(state)
        if self.on_phase is not None:
            self.on_phase(f"{phase}:{state.active.step}" if phase == "shifting" else phase)

    # ------------------------------------------------------------------ interruption
    def _recover(self, state: FlowReleases) -> str | None:
        active = state.active
        target = self.target
        if active is None:
            self._ensure_pointing_somewhere(state)
            return None
        known = {d.name for d in target.list_deployments()}
        traffic = target.get_traffic()
        if active.deployment in known and (
            active.phase == "finalizing" or traffic.get(active.deployment) == 100
        ):
            self._finalize(state, active.deployment)
            done = f"continued the interrupted release {active.deployment}: it already had 100 %"
        else:
            previous = {k: v for k, v in active.previous_traffic.items() if k in known}
            if previous and sum(previous.values()) == 100:
                back = {**previous}
                if active.deployment in known:
                    back[active.deployment] = 0
                target.set_traffic(validate_traffic(back, known))
            if active.deployment in known:
                if previous:
                    time.sleep(self.drain_s)
                target.delete(active.deployment)
            self._close(
                state, active.deployment, "abandoned", f"interrupted during {active.phase}; cleaned up"
            )
            done = (
                f"cleaned up the interrupted release {active.deployment} (was {active.phase}); "
                f"traffic: {_fmt(target.get_traffic()) or 'none'}"
            )
        self.progress(f"  {done}")
        self._ensure_pointing_somewhere(state)
        return done

    def _ensure_pointing_somewhere(self, state: FlowReleases) -> None:
        """If deployments exist but traffic sums to nothing, send it to the live release."""
        known = {d.name for d in self.target.list_deployments()}
        if not known or sum(self.target.get_traffic().values()) == 100:
            return
        live = state.live()
        if live and live.deployment in known:
            self.target.set_traffic({**{name: 0 for name in known}, live.deployment: 100})
            self.progress(
                f"  traffic pointed at nothing; restored 100 % on the live release {live.deployment}"
            )


def load_reconciled(target: Target, store: ReleaseStore, progress: Progress | None = None) -> FlowReleases:
    """Load ``store`` and reconcile it with ``target`` (:func:`release.release_state.reconcile`).

    Works from an empty ``.genaiops/`` (a fresh CI agent): the history is rebuilt from the
    target's deployments and traffic, and the rebuilt record is saved back as a cache.
    """
    state = store.load()
    changes = reconcile(state, target.list_deployments())
    if changes:
        (progress or log.info)(f"  release record brought in line with the target: {'; '.join(changes)}")
        store.save(state)
    return state


def roll_back(
    target: Target,
    settings: ReleaseStrategy,
    store: ReleaseStore,
    progress: Progress | None = None,
    drain_s: float = DRAIN_S,
) -> RolloutResult:
    """Put traffic back on the release before the live one (smoke tested first).

    The release rolled back from is then removed (after ``drain_s``) on targets that remove
    deployments, so that what the target holds is always the live release plus rollback
    candidates: the history can then be rebuilt from the target alone. App Service keeps its
    slot (infra owns it); the next release overwrites it.
    """
    say = progress or log.info
    with store:
        state = load_reconciled(target, store, say)
        Rollout(target, settings, store, progress=say)._recover(state)
        live = state.live()
        known = {d.name for d in target.list_deployments()}
        earlier = [r for r in state.history if r.status == "replaced" and r.deployment in known]
        if live is None or not earlier:
            raise UserError(
                f"flow {target.flow!r}: there is no earlier release to roll back to "
                f"(kept deployments: {sorted(known) or 'none'}); deploy a known-good image instead"
            )
        back_to = earlier[-1]
        traffic = {name: 0 for name in known}
        traffic[back_to.deployment] = 100
        validate_traffic(traffic, known)
        started = now()
        run_smoke_tests(
            target.scoring_url(back_to.deployment),
            settings.smoke_tests,
            headers=target.auth_headers(back_to.deployment),
            readiness_timeout_s=settings.readiness_timeout_seconds,
            what=f"deployment {back_to.deployment}",
        )
        target.set_traffic(traffic)
        live.status = "rolled_back"
        live.detail = f"rolled back to {back_to.deployment}"
        state.history.append(
            replace(back_to, status="live", started_at=started, finished_at=now(), detail="rollback")
        )
        back_to.status = "replaced_by_rollback"
        store.save(state)
        say(f"  traffic {_fmt(traffic)}")
        if target.removes_deployments:
            time.sleep(drain_s)
            try:
                target.delete(live.deployment)
                say(f"  removed the rolled-back deployment {live.deployment}")
            except Exception as exc:  # traffic is already back; say what is left over
                log.warning("could not remove deployment %s: %s", live.deployment, exc)
        return RolloutResult(back_to.deployment, "live", traffic, started, live_at=now())


def _fmt(traffic: dict[str, int]) -> str:
    return ", ".join(f"{name}={share}%" for name, share in sorted(traffic.items()) if share) or ""
