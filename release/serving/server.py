"""A small pre-fork HTTP server for one flow: ``POST /score`` and ``GET /health``.

The master process binds the socket, then forks ``$WORKERS`` processes. Each worker loads the
flow once through the engine adapter and serves requests with a thread per connection
(HTTP/1.1 keep-alive). A worker only accepts connections after its flow is loaded, so a
``/health`` answer means the flow is ready. The master restarts a worker that dies (bounded)
and stops every worker on SIGTERM/SIGINT; a stopping worker stops accepting, finishes its
requests in flight (at most ``DRAIN_TIMEOUT_S``) and answers them with ``Connection: close``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from release.engine import get_engine
from release.engine.base import FlowSession, LineFailed
from release.serving import telemetry as request_telemetry
from release.serving.settings import ServerSettings, StartupError, load_settings

log = logging.getLogger("genaiops.serving")

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RESTARTS = 10
STOP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 8.0  # < STOP_TIMEOUT_S: the master kills what is still running after that
FLUSH_TIMEOUT_S = 1.5  # telemetry flush of a stopping worker: drain + flush < STOP_TIMEOUT_S
EXIT_LOAD_FAILED = 3
LOAD_LOCK_WAIT_S = 120.0  # a worker waits at most this long for another worker's flow load
# The engine's messages for requests that do not match the flow's inputs (HTTP 400).
INPUT_ERRORS = (
    "InputNotFound",
    "InputTypeError",
    "InputMappingError",
    "MissingRequiredFlowInput",
    "InputError",
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "genaiops-serving/1"
    sys_version = ""
    session: FlowSession  # set on the subclass made per worker
    telemetry: request_telemetry.RequestTelemetry | None = None  # set when App Insights is configured
    _status = 0  # the status code of the answer sent (for telemetry)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no per-request log
        return

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode("utf-8")
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if _DRAIN.draining:  # stopping: ask keep-alive clients to reconnect (to another worker)
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, code: str, message: str) -> None:
        self._send(status.value, {"error": {"code": code, "message": message}})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/health":
            self._send(200, {"status": "healthy"})
        else:
            self._error(HTTPStatus.NOT_FOUND, "NotFound", f"no route GET {self.path}; use POST /score")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/score":
            self._error(HTTPStatus.NOT_FOUND, "NotFound", f"no route POST {self.path}; use POST /score")
            return
        if self.telemetry is None:
            self._score()
            return
        start_ns = time.time_ns()
        self._status = 0
        try:
            self._score()
        finally:
            # no status: the handler raised before answering, which the client sees as a failure
            status = self._status or HTTPStatus.INTERNAL_SERVER_ERROR.value
            self.telemetry.record(
                "POST", "/score", status, start_ns, time.time_ns(), self.headers.get("Host", "")
            )

    def _score(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "BadRequest", "Content-Length missing, invalid or too large")
            return
        raw = self.rfile.read(length)
        try:
            inputs = json.loads(raw or b"null")
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidJson", f"request body is not JSON: {exc}")
            return
        if not isinstance(inputs, dict):
            self._error(
                HTTPStatus.BAD_REQUEST, "InvalidInput", "request body must be a JSON object of flow inputs"
            )
            return
        try:
            with _DRAIN.request():
                outputs = self.session.response(inputs)
        except LineFailed as exc:
            message = str(exc)
            if any(code in message.split() for code in INPUT_ERRORS):
                self._error(HTTPStatus.BAD_REQUEST, "InvalidInput", message[:2000])
            else:
                log.warning("flow run failed")
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "FlowRunFailed", message[:2000])
            return
        except Exception as exc:  # a bug in the engine or the flow: still JSON, still 5xx
            log.warning("flow run raised %s", type(exc).__name__)
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "FlowRunFailed", f"{type(exc).__name__}: {exc}"[:2000]
            )
            return
        self._send(200, outputs)

    def do_PUT(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "MethodNotAllowed", "use POST /score or GET /health")

    do_DELETE = do_PUT
    do_PATCH = do_PUT


class _Drain:
    """Counts requests in flight so that a stopping worker finishes them before it exits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.draining = False

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.05)
        return False


_DRAIN = _Drain()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


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


def _worker(sock: socket.socket, settings: ServerSettings, load_lock: int) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the flow is loaded: just die
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        with _one_at_a_time(load_lock, LOAD_LOCK_WAIT_S):
            session = get_engine().open(
                settings.flow_dir, settings.variant, settings.connections, settings.connection_overrides
            )
    except Exception as exc:
        log.error("worker %d: cannot load the flow at %s: %s", os.getpid(), settings.flow_dir, exc)
        return EXIT_LOAD_FAILED
    telemetry = request_telemetry.start(settings.telemetry)  # after fork: it runs a thread
    handler = type("Handler", (_Handler,), {"session": session, "telemetry": telemetry})
    server = _Server((settings.host, settings.port), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock

    def stop(signum: int, frame: FrameType | None) -> None:
        # graceful: stop accepting, finish the requests in flight (bounded), then exit
        _DRAIN.draining = True
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker %d: flow loaded, serving", os.getpid())
    server.serve_forever(poll_interval=0.2)
    if not _DRAIN.wait_idle(DRAIN_TIMEOUT_S):
        log.warning("worker %d: requests still running after %.0f s; exiting", os.getpid(), DRAIN_TIMEOUT_S)
    if telemetry is not None:
        telemetry.shutdown(FLUSH_TIMEOUT_S)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    # Several workers wait on this socket: non-blocking, so a worker that loses the race for a
    # connection gets EAGAIN instead of blocking in accept() (and can always stop promptly).
    sock.setblocking(False)
    return sock


class Master:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.sock = _bind(settings.host, settings.port)
        self.load_lock = tempfile.TemporaryFile()  # noqa: SIM115 - held until the master stops
        self.children: set[int] = set()
        self.stopping = False
        self.restarts = 0

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _worker(self.sock, self.settings, self.load_lock.fileno())
            finally:
                os._exit(code)
        self.children.add(pid)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info(
            "serving %s on %s:%d with %d workers",
            self.settings.flow_dir,
            self.settings.host,
            self.settings.port,
            self.settings.workers,
        )
        for _ in range(self.settings.workers):
            self._spawn()
        code = 0
        while not self.stopping:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.2)
                continue
            self.children.discard(pid)
            if self.stopping:
                break
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code == EXIT_LOAD_FAILED:
                log.error("a worker could not load the flow; stopping")
                code = EXIT_LOAD_FAILED
                break
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                log.error("workers died %d times; stopping", self.restarts)
                code = 1
                break
            log.warning("worker %d exited (%d); starting a new one", pid, exit_code)
            self._spawn()
        self._shutdown()
        return code

    def _shutdown(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.children.discard(pid)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
            else:
                self.children.discard(pid)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.sock.close()
        self.load_lock.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings()
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    return Master(settings).run()
