"""Ports and readiness checks for the local environment (127.0.0.1 only, every wait bounded)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterable

LOCALHOST = "127.0.0.1"
BIND_RETRIES = 5  # binding a port that is briefly held elsewhere: tries, BIND_RETRY_WAIT_S apart
BIND_RETRY_WAIT_S = 0.5
BACKLOG = 1024


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when nothing listens on host:port and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the kernel says is free right now, released again: another process may take it
    before it is used. Prefer :func:`listening_socket` / :func:`reserve_ports`, which keep it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening_socket(
    port: int, host: str = LOCALHOST, retries: int = 1, wait_s: float = BIND_RETRY_WAIT_S
) -> socket.socket:
    """A bound, listening, inheritable TCP socket on host:port (0: the kernel picks a free port).

    A server we start is handed this socket (``--fd``, ``pass_fds``), so the port is never free
    between choosing and serving. ``retries`` > 1 tries again ``wait_s`` apart while the port is
    in use (e.g. by a process that is stopping). Raises OSError (``errno.EADDRINUSE``: in use).
    """
    for attempt in range(1, max(1, retries) + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or attempt >= retries:
                raise
            time.sleep(wait_s)
            continue
        sock.set_inheritable(True)
        return sock
    raise AssertionError("unreachable")  # pragma: no cover


def reserve_ports(names: Iterable[str], host: str = LOCALHOST) -> dict[str, socket.socket]:
    """One listening socket on a free port (port 0) per name, held until handed on or closed.

    ``{name: sock}``; the ports are ``sock.getsockname()[1]``. Give the sockets to
    :class:`release.local_env.environment.LocalEnvironment` (``listeners=``): it serves our own
    servers on them and releases a port just before a third-party server binds it.
    """
    held: dict[str, socket.socket] = {}
    try:
        for name in names:
            held[name] = listening_socket(0, host)
    except OSError:
        close_all(held.values())
        raise
    return held


def close_all(sockets: Iterable[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def http_status(url_path: str, port: int, timeout_s: float = 2.0, host: str = LOCALHOST) -> int | None:
    """GET http://host:port<path>; the status code, or None when nothing answers in time."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", url_path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def docker_ping(docker_host: str, timeout_s: float = 2.0) -> bool:
    """True when a Docker engine really answers ``GET /_ping`` at ``docker_host``.

    Accepts ``unix:///path`` and ``tcp://host:port``; a stale socket file is not an engine.
    """
    conn: http.client.HTTPConnection
    if docker_host.startswith("unix://"):
        conn = _UnixHTTPConnection(docker_host[len("unix://") :], timeout_s)
    elif docker_host.startswith(("tcp://", "http://")):
        hostport = docker_host.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        conn = http.client.HTTPConnection(host or hostport, int(port or 2375), timeout=timeout_s)
    else:
        return False
    try:
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        return response.status == 200 and response.read(16).strip() == b"OK"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passed; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def http_json(
    url_path: str, port: int, timeout_s: float = 2.0, host: str = LOCALHOST
) -> dict[str, object] | None:
    """GET a JSON object from http://host:port<path>; None unless it answers 200 with JSON."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", url_path)
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = json.loads(response.read())
        return body if isinstance(body, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
