"""The flow image's server: gunicorn running :class:`release.serving.app.ScoringApp`.

Gunicorn (https://docs.gunicorn.org/en/stable/settings.html) manages the worker processes
(restarting one that dies, stopping when a worker cannot load the flow), keep-alive, request
parsing (chunked bodies, header limits) and the graceful stop: on SIGTERM the master stops
accepting, each worker finishes the requests in flight within ``graceful_timeout`` (answering
them with ``Connection: close``), then exits. We only choose the settings and load the flow.

Workers are ``gthread`` workers: a flow line is blocking Python (the engine's executor, HTTP
calls to the model), so each worker runs requests on a bounded thread pool and keeps idle
keep-alive connections in its event poller. Each worker loads the flow once, before it accepts
connections, so a ``/health`` answer means the flow is ready. Workers load one at a time (the
engine writes its settings file while loading; see :func:`_one_at_a_time`).

Settings from the environment: ``HOST`` (0.0.0.0), ``PORT`` (8080), ``WORKERS`` (cores, >= 2),
``THREADS`` (per worker, 8), or ``LISTEN_FD``: the file descriptor of an already bound and
listening socket to serve on (gunicorn's ``fd://``), which a parent process hands over so that
the port is never released between choosing it and serving on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn.app.base import BaseApplication

from release.engine import get_engine
from release.serving import telemetry as request_telemetry
from release.serving.app import ScoringApp
from release.serving.settings import ServerSettings, StartupError, load_settings

log = logging.getLogger("genaiops.serving")

DRAIN_TIMEOUT_S = 8  # gunicorn graceful_timeout: requests in flight get this long after SIGTERM
KEEPALIVE_S = 30  # an idle keep-alive connection is closed after this long
WORKER_TIMEOUT_S = 120  # a worker whose main loop stops for this long is restarted
FLUSH_TIMEOUT_S = 1.5  # telemetry flush of a stopping worker: drain + flush < docker stop's 10 s
LOAD_LOCK_WAIT_S = 120.0  # a worker waits at most this long for another worker's flow load
BACKLOG = 1024

WSGIApp = Callable[..., Any]


@contextlib.contextmanager
def _one_at_a_time(lock_fd: int, timeout_s: float) -> Iterator[None]:
    """Workers load the flow one at a time: the engine writes its settings file (prompt flow's
    ``pf.yaml``) while loading, and a worker reading it half-written could not start. A POSIX
    record lock on the master's file (held per process, released if the worker dies); bounded:
    after ``timeout_s`` the worker loads anyway."""
    deadline = time.monotonic() + timeout_s
    locked = False
    while not locked and time.monotonic() < deadline:
        try:
            fcntl.lockf(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError:
            time.sleep(0.05)
    try:
        yield
    finally:
        if locked:
            fcntl.lockf(lock_fd, fcntl.LOCK_UN)


def gunicorn_options(settings: ServerSettings, listen_fd: int | None = None) -> dict[str, Any]:
    """The gunicorn settings for ``settings`` (names as in gunicorn's settings reference)."""
    if listen_fd is not None:
        bind = f"fd://{listen_fd}"
    elif ":" in settings.host:
        bind = f"[{settings.host}]:{settings.port}"
    else:
        bind = f"{settings.host}:{settings.port}"
    return {
        "bind": [bind],
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "backlog": BACKLOG,
        "keepalive": KEEPALIVE_S,
        "graceful_timeout": DRAIN_TIMEOUT_S,
        "timeout": WORKER_TIMEOUT_S,
        "preload_app": False,  # each worker loads the flow itself, after the fork
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "control_socket_disable": True,  # no runtime control socket in the image
        "worker_tmp_dir": tempfile.gettempdir(),
        "proc_name": "genaiops-serving",
        "worker_exit": _worker_exit,
    }


_telemetry: request_telemetry.RequestTelemetry | None = None  # this worker's, when configured


def _worker_exit(server: Any, worker: Any) -> None:
    """Gunicorn hook, in the worker after it stopped serving: flush telemetry (bounded)."""
    if _telemetry is not None:
        _telemetry.shutdown(FLUSH_TIMEOUT_S)


class FlowServer(BaseApplication):  # type: ignore[misc]
    """Gunicorn's custom application (https://docs.gunicorn.org/en/stable/custom.html)."""

    def __init__(self, settings: ServerSettings, listen_fd: int | None = None) -> None:
        self.settings = settings
        self.options = gunicorn_options(settings, listen_fd)
        self.load_lock = tempfile.TemporaryFile()  # noqa: SIM115 - held while the master runs
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        """Runs in each worker before it accepts connections: load the flow, start telemetry."""
        global _telemetry
        s = self.settings
        engine = get_engine()
        with _one_at_a_time(self.load_lock.fileno(), LOAD_LOCK_WAIT_S):
            session = engine.open(s.flow_dir, s.variant, s.connections, s.connection_overrides)
        info = engine.describe(s.flow_dir)
        _telemetry = request_telemetry.start(s.telemetry)  # after fork: it runs a thread
        log.info("worker %d: flow loaded, serving", os.getpid())
        return ScoringApp(session, info, s.flow_name, engine.name, _telemetry)


def _listen_fd(environ: dict[str, str]) -> int | None:
    raw = environ.get("LISTEN_FD", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise StartupError(f"LISTEN_FD={raw!r} is not a file descriptor number")
    return int(raw)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
        listen_fd = _listen_fd(dict(os.environ))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    log.info(
        "serving %s with %d gunicorn workers x %d threads",
        settings.flow_dir,
        settings.workers,
        settings.threads,
    )
    try:
        FlowServer(settings, listen_fd).run()
    except SystemExit as exc:  # gunicorn exits with its own codes (3: a worker failed to boot)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
