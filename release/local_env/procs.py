"""Processes of the local environment: start detached, recognise by pid, stop for sure.

A process we start is recorded as a :class:`ProcessRecord` (pid, kernel start time and a
marker string that appears in its command line). Before we signal a pid we check, through
``/proc/<pid>``, that it is still that very process: a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from release.errors import UserError

PROC = Path("/proc")
# Helpers a daemon of ours may leave outside its process tree (containerd shims re-parent).
DAEMON_PROGRAMS = ("containerd", "docker", "runc")


@dataclass(frozen=True)
class ProcessRecord:
    """Enough to find a process again and prove it is ours."""

    pid: int
    start_ticks: int
    marker: str  # a string in its command line, e.g. our config path

    def to_json(self) -> dict[str, object]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "marker": self.marker}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessRecord:
        return cls(int(str(data["pid"])), int(str(data["start_ticks"])), str(data["marker"]))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    return [raw[: raw.index(" ")], "comm", *raw[raw.rindex(")") + 2 :].split()]


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[21]) if fields else None


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def is_alive(pid: int) -> bool:
    """True when the pid exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[2] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_ours(record: ProcessRecord) -> bool:
    """The recorded process still runs: same pid, same start time, marker in its command line."""
    return (
        is_alive(record.pid)
        and start_ticks(record.pid) == record.start_ticks
        and record.marker in cmdline(record.pid)
    )


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` in the process tree (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for other in all_pids():
        ppid = parent_pid(other)
        if ppid is not None:
            children.setdefault(ppid, []).append(other)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pids_mentioning(needles: Iterable[str], programs: tuple[str, ...] = DAEMON_PROGRAMS) -> list[int]:
    """Live processes of ``programs`` (by executable name prefix) whose command line contains
    one of ``needles``; never ourselves."""
    wanted = [n for n in needles if n]
    if not wanted:
        return []
    me = os.getpid()
    found = []
    for pid in all_pids():
        line = cmdline(pid)
        program = os.path.basename(line.split(" ", 1)[0])
        if pid != me and program.startswith(programs) and any(n in line for n in wanted) and is_alive(pid):
            found.append(pid)
    return found


def start(
    argv: Sequence[str],
    marker: str,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> ProcessRecord:
    """Start a detached process (own session), stdout/stderr appended to ``log_file``;
    ``pass_fds``: file descriptors the process inherits (e.g. a listening socket)."""
    if marker not in " ".join(argv):
        raise ValueError(f"marker {marker!r} must appear in the command line {list(argv)}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
                close_fds=True,
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            raise UserError(f"cannot start {argv[0]}: {exc}") from None
    ticks = start_ticks(proc.pid)
    if ticks is None:  # it died at once; leave the zombie to _reap below
        _reap(proc.pid)
        raise UserError(f"{argv[0]} exited at once; see {log_file}")
    return ProcessRecord(proc.pid, ticks, marker)


def _reap(pid: int) -> None:
    """Collect a zombie child of ours (no-op for processes that are not our children)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait (bounded) until none of ``pids`` is alive; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    left = list(pids)
    while True:
        for pid in left:
            _reap(pid)
        left = [pid for pid in left if is_alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def terminate(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    """SIGTERM, a bounded wait, then SIGKILL whatever is left (and a short wait for it)."""
    live = [pid for pid in pids if is_alive(pid)]
    if not live:
        return
    _signal(live, signal.SIGTERM)
    left = wait_gone(live, timeout_s)
    if left:
        _signal(left, signal.SIGKILL)
        wait_gone(left, 5.0)


def stop(record: ProcessRecord, timeout_s: float = 10.0, extra_markers: Sequence[str] = ()) -> bool:
    """Stop a recorded process and its whole tree; False when it was no longer ours to stop.

    The tree is taken before the signal (children may be re-parented afterwards); processes
    whose command line mentions one of ``extra_markers`` (e.g. containerd shims that left
    the tree) are stopped as well.
    """
    if not is_ours(record):
        _reap(record.pid)
        stray = pids_mentioning(extra_markers)
        terminate(stray, timeout_s)
        return False
    tree = descendants(record.pid)
    terminate([record.pid], timeout_s)
    leftovers = [pid for pid in tree if is_alive(pid)]
    leftovers += [pid for pid in pids_mentioning(extra_markers) if pid not in leftovers]
    terminate(leftovers, timeout_s)
    return True
