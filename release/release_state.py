"""The record of a flow's releases in one environment: ``.genaiops/<env>/releases/<flow>.json``.

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from release.config import REPO_ROOT
from release.errors import UserError

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
