"""The record of a flow's releases in one environment: ``.genaiops/<env>/releases/<flow>.json``.

The target is the source of truth; this file is a cache of it. CI agents start with an empty
``.genaiops/``, so :func:`reconcile` rebuilds the history from what the target itself holds
(deployment names carry their creation time, labels/tags carry the release id and image, and
the router or endpoint carries the traffic) before any release, status or rollback.

It holds the release in progress (``active``: deployment, image, phase, the traffic before it
started) and the history of finished ones. A run that was interrupted leaves ``active`` set, so
the next run knows what to continue or clean up. Writes are atomic (temp file + rename) and a
lock file keeps two releases of the same flow from running at once; the lock is released by
the kernel when the process dies, so a killed run never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from release.config import REPO_ROOT
from release.errors import UserError

if TYPE_CHECKING:
    from release.targets.base import DeploymentInfo

# Phases of an active release, in order.
PHASES = ("creating", "smoke", "shifting", "finalizing")


def releases_dir(environment: str, root: Path | None = None) -> Path:
    return (root or REPO_ROOT / ".genaiops") / environment / "releases"


@dataclass
class ActiveRelease:
    release_id: str
    deployment: str
    image: str
    strategy: str
    phase: str
    previous_traffic: dict[str, int]
    started_at: float
    step: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ReleaseRecord:
    release_id: str
    deployment: str
    image: str
    status: str  # live | replaced | failed | rolled_back | abandoned
    started_at: float
    finished_at: float
    detail: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class FlowReleases:
    flow: str
    environment: str
    active: ActiveRelease | None = None
    history: list[ReleaseRecord] = field(default_factory=list)

    def live(self) -> ReleaseRecord | None:
        for record in reversed(self.history):
            if record.status == "live":
                return record
        return None

    def record(self, record: ReleaseRecord) -> None:
        if record.status == "live":
            for old in self.history:
                if old.status == "live":
                    old.status = "replaced"
        self.history.append(record)


class ReleaseStore:
    """Load, lock and save one flow's release record."""

    def __init__(self, flow: str, environment: str, directory: Path) -> None:
        self.flow = flow
        self.environment = environment
        self.path = directory / f"{flow}.json"
        self._lock_fd: int | None = None

    def load(self) -> FlowReleases:
        if not self.path.is_file():
            return FlowReleases(self.flow, self.environment)
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            active = raw.get("active")
            return FlowReleases(
                flow=raw["flow"],
                environment=raw["environment"],
                active=ActiveRelease(**active) if active else None,
                history=[ReleaseRecord(**r) for r in raw.get("history", [])],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{self.path}: release record is unreadable ({exc}); move it aside to start afresh "
                "(traffic on the endpoint is not changed by that)"
            ) from None

    def save(self, releases: FlowReleases) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(releases), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def __enter__(self) -> ReleaseStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path.with_suffix(".lock")), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another release of flow {self.flow!r} in environment {self.environment!r} is running "
                f"(lock {self.path.with_suffix('.lock')}); wait for it to finish"
            ) from None
        self._lock_fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def now() -> float:
    return time.time()


# ``<initials>-r<YYYYmmdd>t<HHMMSS>-<hex>``, as made by release.strategies.new_deployment_name.
_STAMP = re.compile(r"-r(\d{8})t(\d{6})(?:-|$)")
CREATED_LABEL = "genaiops.created-at"  # UNIX seconds, for deployments named without a stamp


def created_at(info: DeploymentInfo) -> float | None:
    """When a deployment was created (UNIX s): its created-at label (set by every release, to the
    millisecond), else the stamp in its name (to the second), else None."""
    raw = info.labels.get(CREATED_LABEL)
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            pass
    match = _STAMP.search(info.name)
    if match:
        stamp = datetime.strptime(match.group(1) + match.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        return stamp.timestamp()
    return None


def _rebuilt(info: DeploymentInfo, status: str, default_time: float) -> ReleaseRecord:
    """A history record for a deployment the cached record does not know, from the target alone."""
    when = created_at(info) or default_time
    labels = {k: v for k, v in info.labels.items() if k != CREATED_LABEL}
    release_id = info.labels.get("genaiops.release", info.name)
    detail = "rebuilt from the target"
    return ReleaseRecord(release_id, info.name, info.image, status, when, when, detail, labels)


def reconcile(state: FlowReleases, deployments: Iterable[DeploymentInfo]) -> list[str]:
    """Make ``state`` agree with what the target holds; return what was changed (for logs).

    Rules (the target wins over the cached record):

    - the deployment with the largest traffic share is the live release;
    - kept deployments created before it are earlier releases (``replaced``: rollback candidates);
    - kept deployments created after it with no traffic were rolled back or failed
      (``rolled_back``): they are never rollback candidates;
    - a cached ``live`` record whose deployment no longer holds the most traffic is ``replaced``
      (older than the live one) or ``rolled_back`` (newer).

    Creation order comes from the deployment name's stamp (:func:`created_at`), falling back to
    the name itself, which sorts by time for every name this toolkit makes.
    """
    infos = sorted(deployments, key=lambda i: (created_at(i) or 0.0, i.name))
    if not infos:
        return []
    order = {info.name: index for index, info in enumerate(infos)}
    live = max(infos, key=lambda i: (i.traffic, order[i.name]))
    if live.traffic <= 0:
        return []
    changes: list[str] = []
    if state.active is not None and state.active.deployment == live.name:
        return []  # a release in progress owns the record; _recover decides what to do with it
    known_records = {r.deployment: r for r in state.history}
    cached_live = state.live()
    if cached_live is not None and cached_live.deployment != live.name:
        older = order.get(cached_live.deployment, -1) < order[live.name]
        cached_live.status = "replaced" if older else "rolled_back"
        cached_live.detail = (cached_live.detail + "; " if cached_live.detail else "") + (
            f"the target serves {live.name}"
        )
        changes.append(f"{cached_live.deployment}: {cached_live.status} (the target serves {live.name})")
    stamp = now()
    for info in infos:
        record = known_records.get(info.name)
        if info.name == live.name:
            status = "live"
        elif record is not None and record.status in ("replaced", "rolled_back", "failed", "abandoned"):
            continue
        else:
            status = "replaced" if order[info.name] < order[live.name] else "rolled_back"
        if record is None:
            state.history.append(_rebuilt(info, status, stamp))
            changes.append(f"{info.name}: {status} (rebuilt from the target)")
        elif record.status != status:
            record.status = status
            why = "the target serves it" if status == "live" else "rebuilt from the target"
            changes.append(f"{info.name}: {status} ({why})")
    if not changes:
        return changes
    # history is in time order: earlier releases first, the live one after them
    state.history.sort(key=lambda r: (r.status == "live", order.get(r.deployment, -1), r.finished_at))
    return changes
