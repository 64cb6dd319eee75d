"""The local traffic router: one nginx, one upstream and one location per flow.

``Router(state_dir, port)`` owns ``<state_dir>/router/``. Release code drives it with
:meth:`Router.set_routes`; each change renders the whole ``nginx.conf`` from ``routes.json``,
checks it with ``nginx -t``, renames it into place atomically and reloads nginx gracefully,
then waits (bounded) until nginx serves the new generation. A config nginx rejects never
goes live, and the previous routes stay in force.

Requests to ``/<flow>/...`` go to the flow's upstream with the ``/<flow>`` prefix removed;
the response carries ``X-Genaiops-Deployment`` naming the deployment that served it. A flow
with no routed deployment answers 503 with a JSON body. Every request is logged as one JSON
line in ``logs/access.jsonl``, which :meth:`Router.read_metrics` turns into per-deployment
:class:`~release.targets.base.TrafficMetrics`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from release.errors import UserError
from release.local_env import net, procs
from release.local_env.packages import which
from release.targets.base import TrafficMetrics

DEPLOYMENT_HEADER = "X-Genaiops-Deployment"
HEALTH_PATH = "/_genaiops/health"
RELOAD_TIMEOUT_S = 15.0
NGINX_TEST_TIMEOUT_S = 30.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FLOW_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


class RouterError(UserError):
    """A route change was refused; the routes in force did not change."""


class Route(NamedTuple):
    host_port: str  # "127.0.0.1:PORT"
    weight: int  # 0..100; 0 = not routed


def _normalize(flow: str, deployment: str, target: object) -> Route:
    if not _NAME_RE.match(deployment):
        raise RouterError(
            f"router: flow {flow!r}: deployment name {deployment!r} must match {_NAME_RE.pattern}"
        )
    if not (isinstance(target, tuple) and len(target) == 2):
        raise RouterError(f"router: flow {flow!r}: {deployment!r} must map to (host_port, weight)")
    host_port, weight = target
    if isinstance(host_port, int) and not isinstance(host_port, bool):
        host, port = "127.0.0.1", host_port
    elif isinstance(host_port, str) and ":" in host_port:
        host, _, port_text = host_port.rpartition(":")
        if not port_text.isdigit():
            raise RouterError(f"router: flow {flow!r}: {deployment!r}: bad port in {host_port!r}")
        port = int(port_text)
    else:
        raise RouterError(
            f"router: flow {flow!r}: {deployment!r}: {host_port!r} must be a port or '127.0.0.1:PORT'"
        )
    if host not in _LOCAL_HOSTS:
        raise RouterError(
            f"router: flow {flow!r}: {deployment!r}: upstream {host_port!r} must be on 127.0.0.1"
        )
    if not 1 <= port <= 65535:
        raise RouterError(f"router: flow {flow!r}: {deployment!r}: {port} is not a TCP port")
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise RouterError(f"router: flow {flow!r}: {deployment!r}: weight {weight!r} must be 0..100")
    return Route(f"127.0.0.1:{port}", weight)


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Router:
    """nginx in front of the local flow deployments (see the module docstring)."""

    def __init__(self, state_dir: Path | str, port: int) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.dir = self.state_dir / "router"
        self.conf = self.dir / "nginx.conf"
        self.routes_file = self.dir / "routes.json"
        self.access_log = self.dir / "logs" / "access.jsonl"
        self.error_log = self.dir / "logs" / "error.log"
        self.pid_file = self.dir / "nginx.pid"
        self.url = f"http://127.0.0.1:{port}"

    # ------------------------------------------------------------------ queries
    def flow_url(self, flow: str) -> str:
        return f"{self.url}/{flow}/"

    def routes(self) -> dict[str, dict[str, Route]]:
        """Every flow's routes as stored (what nginx serves once ``set_routes`` returned)."""
        try:
            raw = json.loads(self.routes_file.read_text())
        except FileNotFoundError:
            return {}
        return {
            flow: {name: Route(str(r[0]), int(r[1])) for name, r in deployments.items()}
            for flow, deployments in raw.get("flows", {}).items()
        }

    def flow_routes(self, flow: str) -> dict[str, Route]:
        return self.routes().get(flow, {})

    def generation(self) -> int:
        try:
            return int(json.loads(self.routes_file.read_text()).get("generation", 0))
        except FileNotFoundError:
            return 0

    def nginx_command(self) -> list[str]:
        """How the lifecycle starts our nginx master (foreground, our prefix and config)."""
        nginx = which("nginx") or "nginx"
        return [
            nginx,
            "-p",
            str(self.dir),
            "-c",
            str(self.conf),
            "-e",
            str(self.error_log),
            "-g",
            "daemon off;",
        ]

    def running_pid(self) -> int | None:
        """The pid of our nginx master, when it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if procs.is_alive(pid) and str(self.conf) in procs.cmdline(pid) else None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        return net.http_status(HEALTH_PATH, self.port, timeout_s) == 200

    # ------------------------------------------------------------------ changes
    def set_routes(self, flow: str, deployments: Mapping[str, tuple[int | str, int]]) -> None:
        """Route ``/<flow>/`` to these deployments by weight (0 = not routed; {} = none).

        Validated first; nginx must accept the config (``nginx -t``) before it replaces the
        live one; returns once nginx serves it. On any error the routes in force stay.
        """
        if not _FLOW_RE.match(flow):
            raise RouterError(f"router: flow name {flow!r} must match {_FLOW_RE.pattern}")
        routes = {name: _normalize(flow, name, target) for name, target in deployments.items()}
        ports = [r.host_port for r in routes.values()]
        if len(set(ports)) != len(ports):
            raise RouterError(f"router: flow {flow!r}: two deployments share one upstream: {routes}")
        if self.running_pid() is None:
            raise RouterError(
                f"router: nginx is not running for {self.state_dir}; start it with 'genaiops local up'"
            )
        with self._lock():
            current = self.routes()
            for other, other_routes in current.items():
                clash = {r.host_port for r in other_routes.values()} & set(ports)
                if other != flow and clash:
                    raise RouterError(f"router: upstream(s) {sorted(clash)} already serve flow {other!r}")
            if routes:
                current[flow] = routes
            else:
                current.pop(flow, None)
            self._apply(current, self.generation() + 1, reload=True)

    def write_initial_config(self) -> None:
        """Render the stored routes for a fresh nginx start (used by ``local up``)."""
        with self._lock():
            self._apply(self.routes(), self.generation() + 1, reload=False)

    def forget_routes(self) -> None:
        """Drop every route (``local down`` stops the deployments they pointed to)."""
        with self._lock():
            self.routes_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ metrics
    def read_metrics(self, flow: str, since: float) -> dict[str, TrafficMetrics]:
        """Requests, 5xx errors and p99 latency per deployment of ``flow`` since a UNIX time."""
        times: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        for entry in self._log_entries():
            if entry.get("flow") != flow or float(entry.get("msec", 0)) < since:
                continue
            name = str(entry.get("deployment") or "")
            if not name:
                continue  # answered by the router itself (no deployment routed)
            times.setdefault(name, []).append(float(entry.get("request_time", 0)) * 1000.0)
            errors[name] = errors.get(name, 0) + (1 if int(entry.get("status", 0)) >= 500 else 0)
        return {
            name: TrafficMetrics(requests=len(values), errors=errors[name], p99_ms=_p99(values))
            for name, values in times.items()
        }

    def _log_entries(self) -> Iterator[dict[str, Any]]:
        try:
            handle = self.access_log.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        yield entry

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "router.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _apply(self, routes: dict[str, dict[str, Route]], generation: int, reload: bool) -> None:
        for sub in ("logs", "cache"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        candidate = self.dir / "nginx.conf.new"
        candidate.write_text(self.render(routes, generation))
        self._nginx(["-t", "-q", "-c", str(candidate)], what="check the new config")
        previous = {path: _read_or_none(path) for path in (self.conf, self.routes_file)}
        os.replace(candidate, self.conf)
        state = {
            "generation": generation,
            "flows": {f: {n: list(r) for n, r in d.items()} for f, d in routes.items()},
        }
        _write_atomic(self.routes_file, json.dumps(state, indent=2, sort_keys=True))
        if reload:
            master = self.running_pid()
            old_workers = procs.descendants(master) if master else []
            try:
                self._nginx(["-c", str(self.conf), "-s", "reload"], what="reload")
            except RouterError:  # nginx kept the old config: so do our files
                for path, text in previous.items():
                    if text is None:
                        path.unlink(missing_ok=True)
                    else:
                        _write_atomic(path, text)
                raise

            def switched() -> bool:
                # New workers serve the new generation and every old worker stopped accepting
                # (it is gone, or is finishing in-flight requests: "worker process is shutting down").
                return self._served_generation() >= generation and all(
                    not procs.is_alive(pid) or "shutting down" in procs.cmdline(pid) for pid in old_workers
                )

            if not net.wait_until(switched, RELOAD_TIMEOUT_S, 0.02):
                raise RouterError(
                    f"router: nginx did not serve config generation {generation} within "
                    f"{RELOAD_TIMEOUT_S:.0f} s; see {self.error_log}"
                )
            time.sleep(0.05)  # an old worker closes its listeners right after renaming itself

    def _served_generation(self) -> int:
        body = net.http_json(HEALTH_PATH, self.port, 1.0)
        try:
            return int(str(body.get("generation", -1))) if body else -1
        except (TypeError, ValueError):
            return -1

    def _nginx(self, args: list[str], what: str) -> None:
        nginx = which("nginx")
        if nginx is None:
            raise RouterError("router: nginx is not installed; run 'genaiops local up' (it installs it)")
        cmd = [nginx, "-p", str(self.dir), "-e", str(self.error_log), *args]
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=NGINX_TEST_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise RouterError(f"router: nginx could not {what} within {NGINX_TEST_TIMEOUT_S:.0f} s") from None
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip() or f"see {self.error_log}"
            raise RouterError(
                f"router: nginx could not {what}; the routes in force did not change:\n{detail}"
            )

    def render(self, routes: Mapping[str, Mapping[str, Route]], generation: int) -> str:
        """The whole nginx.conf for these routes."""
        d = self.dir
        upstream_map: list[str] = []
        upstreams: list[str] = []
        locations: list[str] = []
        for flow in sorted(routes):
            live = {n: r for n, r in sorted(routes[flow].items()) if r.weight > 0}
            for name, route in sorted(routes[flow].items()):
                escaped = re.escape(route.host_port)
                upstream_map.append(f'        "~(^|, ){escaped}$" "{name}";')
            if not live:
                continue
            servers = "\n".join(
                f"        server {r.host_port} weight={r.weight} max_fails=1 fail_timeout=2s;"
                for r in live.values()
            )
            upstreams.append(f"    upstream genaiops_{flow} {{\n{servers}\n        keepalive 16;\n    }}")
            locations.append(
                f"""        location ^~ /{flow}/ {{
            set $genaiops_flow "{flow}";
            proxy_pass http://genaiops_{flow}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # A switch loses no request: a refused/failed upstream is retried on the next
            # one (bounded). Flow scoring has no side effects, so POST may be retried too.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 2s;
            proxy_send_timeout 300s;
            proxy_read_timeout 300s;
            add_header {DEPLOYMENT_HEADER} $genaiops_deployment always;
        }}"""
            )
        maps = "\n".join(upstream_map)
        return f"""# Generated by genaiops (release/local_env/router.py), generation {generation}.
# Do not edit: change routes with Router.set_routes (routes.json holds them).
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {d}/cache/body;
    proxy_temp_path {d}/cache/proxy;
    fastcgi_temp_path {d}/cache/fastcgi;
    uwsgi_temp_path {d}/cache/uwsgi;
    scgi_temp_path {d}/cache/scgi;
    server_tokens off;
    # Bodies stay in memory: nginx workers run unprivileged and may not reach a state folder
    # under a private home directory.
    client_body_buffer_size 16m;
    client_max_body_size 16m;
    proxy_max_temp_file_size 0;
    keepalive_timeout 15s;
    log_format genaiops escape=json '{{"msec":$msec,"flow":"$genaiops_flow",'
        '"deployment":"$genaiops_deployment","upstream":"$upstream_addr","status":$status,'
        '"request_time":$request_time,"upstream_response_time":"$upstream_response_time",'
        '"method":"$request_method"}}';
    map $upstream_addr $genaiops_deployment {{
        default "";
{maps}
    }}
{chr(10).join(upstreams)}
    server {{
        listen 127.0.0.1:{self.port};
        access_log {d}/logs/access.jsonl genaiops;
        default_type application/json;
        set $genaiops_flow "";
        location = {HEALTH_PATH} {{
            access_log off;
            return 200 '{{"status":"ok","generation":{generation}}}';
        }}
{chr(10).join(locations)}
        location ~ ^/([A-Za-z0-9_-]+)(/|$) {{
            set $genaiops_flow $1;
            return 503 '{{"error":"no deployment serves flow $1 yet","flow":"$1"}}\\n';
        }}
        location / {{
            return 404 '{{"error":"use /<flow>/... ; this path names no flow"}}\\n';
        }}
    }}
}}
"""
