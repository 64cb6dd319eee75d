"""The local environment's lifecycle: ``up``, ``status`` and ``down`` of its five components.

Components, all on 127.0.0.1: the Docker engine (an existing one when it answers, else our own
``dockerd``), an OCI registry (Debian ``docker-registry``), the nginx router
(:mod:`release.local_env.router`), the local model endpoint
(:mod:`release.local_env.model_server`) and the page server (:mod:`release.local_env.page_server`).

Everything lives in one state folder (``local.state_dir``): ``state.json`` records each process
we started (pid, kernel start time, a marker from its command line), so ``down`` stops exactly
those and nothing else. ``up`` is idempotent: what is ours and healthy is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from release.config import REPO_ROOT, EnvSecret, LocalSettings, load_config
from release.errors import UserError
from release.local_env import net, procs
from release.local_env.packages import ensure_binary, which
from release.local_env.router import Router

COMPONENTS = ("docker", "registry", "router", "model", "pages")
PORT_FIELDS = {"registry": "registry", "router": "router", "model": "model", "pages": "pages"}
READY_TIMEOUT_S = {"docker": 90.0, "registry": 30.0, "router": 15.0, "model": 30.0, "pages": 15.0}
STOP_TIMEOUT_S = {"docker": 30.0, "registry": 10.0, "router": 10.0, "model": 10.0, "pages": 10.0}
DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
MODEL_KEY_ENV = "LOCAL_MODEL_API_KEY"
CODE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `release` package

Log = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # "healthy" | "unhealthy" | "stopped" | "external"
    pid: int | None
    port: int | None
    url: str | None
    owned: bool  # started by us (down stops it)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("healthy", "external")


@dataclass(frozen=True)
class UpResult:
    started: list[str]
    already_running: list[str]
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.started)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalEnvironment:
    """One local environment, rooted in ``settings.state_dir`` (relative to ``root``)."""

    def __init__(
        self,
        settings: LocalSettings,
        root: Path = REPO_ROOT,
        source: str = "config/local.yaml",
        log: Log | None = None,
        listeners: Mapping[str, socket.socket] | None = None,
    ) -> None:
        """``listeners``: listening sockets already bound to some of the configured ports
        (:func:`release.local_env.net.reserve_ports`); ``up`` serves our own servers on them and
        releases one just before a third-party server (registry, nginx) binds its port."""
        self.settings = settings
        self._listeners = dict(listeners or {})
        self.root = root
        self.source = source
        self._log: Log = log or _stderr
        state_dir = Path(settings.state_dir)
        self.state_dir = (state_dir if state_dir.is_absolute() else root / state_dir).resolve()
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        # unix socket paths are limited to ~107 bytes: sockets and exec-root live here.
        self.runtime_dir = Path(f"/tmp/genaiops-{digest}")  # noqa: S108 (made 0700 and checked: _runtime)
        self.state_file = self.state_dir / "state.json"
        self.logs_dir = self.state_dir / "logs"
        self.router = Router(self.state_dir, settings.ports.router)

    def log(self, line: str) -> None:
        """Progress output; a closed output (e.g. a broken pipe) never interrupts up or down."""
        with contextlib.suppress(OSError):
            self._log(line)

    @classmethod
    def from_config(cls, env: str = "local", log: Log | None = None) -> LocalEnvironment:
        config = load_config(env)
        return cls(config.local_settings(), source=f"config/{env}.yaml", log=log)

    # ------------------------------------------------------------------ addresses
    @property
    def ports(self) -> dict[str, int]:
        p = self.settings.ports
        return {"registry": p.registry, "router": p.router, "model": p.model, "pages": p.pages}

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.settings.ports.registry}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports.router}"

    @property
    def model_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports.model}/v1"

    @property
    def pages_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ports.pages}"

    @property
    def own_docker_socket(self) -> str:
        return f"unix://{self.runtime_dir}/docker.sock"

    def docker_host(self) -> str | None:
        """The engine ``up`` chose (ours or an existing one), or None before ``up``."""
        entry = self._load().get("docker")
        return str(entry["docker_host"]) if entry else None

    def model_api_key(self) -> str:
        """The model endpoint's key: ``$LOCAL_MODEL_API_KEY``, else the one kept in the state dir."""
        ref = self.settings.model_api_key
        if isinstance(ref, EnvSecret) and os.environ.get(ref.env):
            return os.environ[ref.env]
        key_file = self.state_dir / "model_api_key"
        with contextlib.suppress(FileNotFoundError):
            return key_file.read_text().strip()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = "sk-local-" + secrets.token_urlsafe(24)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made concurrently: use that one
            return key_file.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key

    def _key_fingerprint(self) -> str:
        """A one-way fingerprint (never the key) to notice that the key changed."""
        return hashlib.sha256(self.model_api_key().encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ state
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return dict(data.get("components", {}))

    def _save(self, components: dict[str, dict[str, Any]]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.new")
        tmp.write_text(json.dumps({"components": components}, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "lifecycle.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _record(entry: dict[str, Any] | None) -> procs.ProcessRecord | None:
        if not entry or "process" not in entry:
            return None
        return procs.ProcessRecord.from_json(entry["process"])

    # ------------------------------------------------------------------ health
    def _healthy(self, name: str, entry: dict[str, Any] | None = None) -> bool:
        if name == "docker":
            host = (entry or {}).get("docker_host") or (entry or {}).get("url")
            return bool(host) and net.docker_ping(str(host))
        if name == "router":
            return self.router.healthy()
        if name == "model" and entry and entry.get("key_sha256") not in (None, self._key_fingerprint()):
            return False  # started with another key: restart it with the current one
        path = {"registry": "/v2/", "model": "/health", "pages": "/health"}[name]
        return net.http_status(path, self.ports[name], 2.0) == 200

    def _running_ours(self, name: str, entry: dict[str, Any] | None) -> bool:
        record = self._record(entry)
        if record is None or not procs.is_ours(record):
            return False
        return name == "docker" or (entry is not None and entry.get("port") == self.ports[name])

    # ------------------------------------------------------------------ up
    def up(self, only: Sequence[str] | None = None) -> UpResult:
        """Start what is not running; leave what is ours and healthy alone. Bounded waits.

        ``only`` limits ``up`` to some components (e.g. ``["model"]`` for tests without Docker).
        """
        unknown = sorted(set(only or ()) - set(COMPONENTS))
        if unknown:
            raise UserError(f"local up: unknown component(s) {unknown}; choose from {list(COMPONENTS)}")
        began = time.monotonic()
        with self._locked():
            components = self._load()
            keep: list[str] = []
            todo: list[str] = []
            for name in [c for c in COMPONENTS if only is None or c in only]:
                entry = components.get(name)
                external = name == "docker" and bool(entry and entry.get("external"))
                if (external or self._running_ours(name, entry)) and self._healthy(name, entry):
                    keep.append(name)
                else:
                    todo.append(name)
            if not todo:
                self.log(
                    f"local environment: all {len(keep)} components already running and healthy; "
                    "nothing changed"
                )
                return UpResult([], keep, time.monotonic() - began)
            # Restarting a sick component of ours: stop it first (frees its port).
            for name in todo:
                entry = components.pop(name, None)
                record = self._record(entry)
                if record is not None and procs.is_alive(record.pid):
                    self.log(f"{name}: not healthy; restarting it")
                    self._stop_entry(name, entry)
            self._save(components)
            self._check_ports([n for n in todo if n in PORT_FIELDS])
            started: list[str] = []
            try:
                for name in todo:
                    components[name] = self._start(name)
                    self._save(components)
                    started.append(name)
            except BaseException:
                self.log(
                    f"local environment: start failed; stopping what this run started: {started or 'nothing'}"
                )
                for name in reversed(started):
                    self._stop_entry(name, components.pop(name, None))
                self._save(components)
                raise
        seconds = time.monotonic() - began
        self.log(f"local environment ready in {seconds:.1f} s (started: {', '.join(started)})")
        return UpResult(started, keep, seconds)

    def _check_ports(self, names: list[str]) -> None:
        for name in names:
            port = self.ports[name]
            if name not in self._listeners and not net.port_is_free(port):
                raise UserError(self._port_in_use(name) + " Nothing was started.")

    def _port_in_use(self, name: str) -> str:
        field = f"local.ports.{PORT_FIELDS[name]}"
        return (
            f"{self.source}: {field}: port {self.ports[name]} on 127.0.0.1 is already in use by another "
            f"process (needed by the {name}); stop that process or set {field} to a free port."
        )

    def _own_socket(self, name: str) -> socket.socket:
        """The listening socket our own server ``name`` is handed: the reserved one, else bound now
        (the bind is the check; retried briefly while e.g. a stopping process still holds it)."""
        port = self.ports[name]
        held = self._listeners.pop(name, None)
        if held is not None and net.port_of(held) == port:
            return held
        if held is not None:
            held.close()
        try:
            return net.listening_socket(port, retries=net.BIND_RETRIES)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(self._port_in_use(name)) from None
            raise UserError(f"{name}: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None

    def _spawn_third_party(self, name: str, start: Callable[[], dict[str, Any]], port: int) -> dict[str, Any]:
        """Start a server that binds its port itself (registry, nginx): release our reservation
        of the port just before, and start again (bounded) when it lost a race for the port."""
        held = self._listeners.pop(name, None)
        if held is not None:
            held.close()
        for attempt in range(1, net.BIND_RETRIES + 1):
            try:
                return start()
            except UserError as exc:
                if "address already in use" not in str(exc).lower() or attempt == net.BIND_RETRIES:
                    raise
                self.log(f"{name}: port {port} was taken while starting; trying again ({attempt})")
                time.sleep(net.BIND_RETRY_WAIT_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self, name: str) -> dict[str, Any]:
        starter: dict[str, Callable[[], dict[str, Any]]] = {
            "docker": self._start_docker,
            "registry": self._start_registry,
            "router": self._start_router,
            "model": self._start_model,
            "pages": self._start_pages,
        }
        return starter[name]()

    def _wait_ready(
        self, name: str, record: procs.ProcessRecord, entry: dict[str, Any], log_file: Path
    ) -> None:
        timeout = READY_TIMEOUT_S[name]
        began = time.monotonic()

        def ready() -> bool:
            if not procs.is_alive(record.pid):
                raise UserError(f"{name} exited while starting; last lines of {log_file}:\n{_tail(log_file)}")
            return self._healthy(name, entry)

        try:
            ok = net.wait_until(ready, timeout, 0.1)
        except UserError:
            procs.stop(record, STOP_TIMEOUT_S[name])
            raise
        if not ok:
            procs.stop(record, STOP_TIMEOUT_S[name])
            raise UserError(
                f"{name} did not become healthy within {timeout:.0f} s; "
                f"last lines of {log_file}:\n{_tail(log_file)}"
            )
        self.log(f"{name}: ready in {time.monotonic() - began:.1f} s")

    def _spawn(
        self,
        name: str,
        argv: list[str],
        marker: str,
        port: int | None,
        url: str,
        env: dict[str, str] | None = None,
        sock: socket.socket | None = None,
    ) -> dict[str, Any]:
        """Start ``argv``; ``sock``: a listening socket the process inherits (closed here after)."""
        log_file = self.logs_dir / f"{name}.log"
        if argv[0] == sys.executable:  # our own servers run this very code, installed or not
            env = dict(env if env is not None else os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), env.get("PYTHONPATH")) if p)
        try:
            fds = (sock.fileno(),) if sock is not None else ()
            record = procs.start(argv, marker, log_file, env=env, cwd=self.root, pass_fds=fds)
        finally:
            if sock is not None:
                sock.close()  # the server holds its own copy
        entry: dict[str, Any] = {"process": record.to_json(), "port": port, "url": url, "log": str(log_file)}
        self._wait_ready(name, record, entry, log_file)
        return entry

    # -- docker
    def _docker_candidates(self) -> list[str]:
        found = [h for h in (self.settings.docker_host, os.environ.get("DOCKER_HOST")) if h]
        return [*found, DEFAULT_DOCKER_SOCKET]

    def _start_docker(self) -> dict[str, Any]:
        for host in self._docker_candidates():
            if net.docker_ping(host):
                self.log(f"docker: using the running engine at {host} (not ours: down leaves it alone)")
                return {"external": True, "docker_host": host, "url": host}
        if not (os.geteuid() == 0 and Path("/etc/debian_version").exists()):
            raise UserError(
                "docker: no Docker engine answers at "
                f"{', '.join(self._docker_candidates())}; start one and set DOCKER_HOST "
                f"(or local.docker_host in {self.source}); genaiops starts its own only as root on Debian"
            )
        dockerd = ensure_binary("dockerd", self.log)
        data_root = self.state_dir / "docker" / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        self._runtime()
        exec_root = self.runtime_dir / "exec"
        exec_root.mkdir(exist_ok=True)
        socket_path = self.runtime_dir / "docker.sock"
        host = self.own_docker_socket
        self.log(f"docker: starting dockerd ({host}, data in {data_root})...")
        argv = [
            dockerd,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver",
            "overlay2",
            "-H",
            host,
            "--data-root",
            str(data_root),
            "--exec-root",
            str(exec_root),
            "--pidfile",
            str(self.runtime_dir / "dockerd.pid"),
            "--shutdown-timeout",
            "3",  # seconds a container gets to stop when the engine stops
        ]
        socket_path.unlink(missing_ok=True)
        return {
            **self._spawn("docker", argv, f"-H {host}", None, host),
            "docker_host": host,
            "external": False,
        }

    def _runtime(self) -> None:
        """Create the short runtime folder for sockets (0700, ours, not a symlink)."""
        self.runtime_dir.mkdir(mode=0o700, exist_ok=True)
        info = self.runtime_dir.lstat()
        if self.runtime_dir.is_symlink() or info.st_uid != os.geteuid():
            raise UserError(
                f"{self.runtime_dir} exists but is not a folder of this user; "
                "remove it and run 'genaiops local up' again"
            )
        if info.st_mode & 0o077:
            self.runtime_dir.chmod(0o700)

    # -- registry
    def _start_registry(self) -> dict[str, Any]:
        binary = ensure_binary("docker-registry", self.log)
        port = self.settings.ports.registry
        folder = self.state_dir / "registry"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        config = folder / "config.yml"
        config.write_text(
            "# generated by genaiops local up\n"
            "version: 0.1\n"
            "log:\n  level: warn\n  fields:\n    service: registry\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {folder / 'data'}\n"
            "  delete:\n    enabled: true\n"
            "  cache:\n    blobdescriptor: inmemory\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n"
        )
        self.log(f"registry: starting docker-registry on 127.0.0.1:{port}...")
        argv = [binary, "serve", str(config)]
        url = f"http://{self.registry}"
        return self._spawn_third_party(
            "registry", lambda: self._spawn("registry", argv, str(config), port, url), port
        )

    # -- router
    def _start_router(self) -> dict[str, Any]:
        ensure_binary("nginx", self.log)
        self.router.write_initial_config()
        self.router.pid_file.unlink(missing_ok=True)
        self.log(f"router: starting nginx on {self.router_url}...")
        argv = self.router.nginx_command()
        port = self.settings.ports.router
        return self._spawn_third_party(
            "router", lambda: self._spawn("router", argv, str(self.router.conf), port, self.router_url), port
        )

    # -- model endpoint
    def _start_model(self) -> dict[str, Any]:
        port = self.settings.ports.model
        env = dict(os.environ, **{MODEL_KEY_ENV: self.model_api_key()})  # never on the command line
        sock = self._own_socket("model")
        argv = model_server_command(port, fd=sock.fileno())
        if self.settings.model_latency_ms:
            argv += ["--latency-ms", str(self.settings.model_latency_ms)]
        if self.settings.model_error_rate:
            argv += ["--error-rate", str(self.settings.model_error_rate)]
        self.log(f"model: starting the local model endpoint on {self.model_url}...")
        entry = self._spawn("model", argv, " ".join(argv[1:7]), port, self.model_url, env=env, sock=sock)
        return {**entry, "key_sha256": self._key_fingerprint()}

    # -- page server
    def _start_pages(self) -> dict[str, Any]:
        port = self.settings.ports.pages
        sock = self._own_socket("pages")
        argv = [
            sys.executable,
            "-m",
            "release.local_env.page_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--flows-dir",
            str(self.root / "flows"),
            "--fd",
            str(sock.fileno()),
        ]
        self.log(f"pages: starting the page server on {self.pages_url}...")
        return self._spawn("pages", argv, " ".join(argv[1:7]), port, self.pages_url, sock=sock)

    # ------------------------------------------------------------------ status
    def status(self) -> list[ComponentStatus]:
        components = self._load()
        result: list[ComponentStatus] = []
        for name in COMPONENTS:
            entry = components.get(name)
            port = None if name == "docker" else self.ports[name]
            if entry is None:
                url = None if name == "docker" else str(self._default_url(name))
                result.append(ComponentStatus(name, "stopped", None, port, url, False, "not started"))
                continue
            url = entry.get("url")
            if name == "docker" and entry.get("external"):
                state = "external" if self._healthy(name, entry) else "unhealthy"
                result.append(
                    ComponentStatus(name, state, None, None, url, False, "engine not started by us")
                )
                continue
            record = self._record(entry)
            pid = record.pid if record else None
            if not self._running_ours(name, entry):
                result.append(
                    ComponentStatus(name, "stopped", None, port, url, True, "recorded process is gone")
                )
                continue
            state = "healthy" if self._healthy(name, entry) else "unhealthy"
            result.append(
                ComponentStatus(name, state, pid, entry.get("port"), url, True, entry.get("log", ""))
            )
        return result

    def _default_url(self, name: str) -> str:
        return {
            "registry": f"http://{self.registry}",
            "router": self.router_url,
            "model": self.model_url,
            "pages": self.pages_url,
        }[name]

    def status_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.status()]

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        """Stop exactly what ``up`` started (verified by pid), in reverse order; returns their names."""
        stopped: list[str] = []
        with self._locked():
            components = self._load()
            for name in reversed(COMPONENTS):
                entry = components.pop(name, None)
                if entry is None:
                    continue
                if entry.get("external"):
                    self.log(f"{name}: engine at {entry.get('docker_host')} is not ours; left running")
                elif self._stop_entry(name, entry):
                    stopped.append(name)
                    self.log(f"{name}: stopped (pid {entry['process']['pid']})")
                else:
                    self.log(f"{name}: was no longer running")
                self._save(components)
            if not stopped:
                self.log("local environment: nothing of ours was running")
        return stopped

    def _stop_entry(self, name: str, entry: dict[str, Any] | None) -> bool:
        record = self._record(entry)
        if record is None:
            return False
        markers = [str(self.runtime_dir) + "/"] if name == "docker" else []
        if name == "docker" and procs.is_ours(record):
            _stop_containers(str((entry or {}).get("docker_host") or self.own_docker_socket), self.log)
        stopped = procs.stop(record, STOP_TIMEOUT_S[name], extra_markers=markers)
        if name == "router":
            self.router.forget_routes()
        if name == "docker":
            _unmount_under([str(self.runtime_dir) + "/", str(self.state_dir / "docker") + "/"])
            if not procs.is_ours(record):
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return stopped


def model_server_command(port: int, fd: int | None = None) -> list[str]:
    """The model endpoint's command line; ``fd``: serve on that inherited listening socket."""
    argv = [
        sys.executable,
        "-m",
        "release.local_env.model_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return argv if fd is None else [*argv, "--fd", str(fd)]


def _stop_containers(docker_host: str, log: Log, grace_s: int = 3) -> None:
    """Stop every running container of our own engine (bounded), so the engine stops quickly."""
    import docker  # the SDK is only needed here

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=30)
        containers = client.containers.list()
    except Exception as exc:  # the engine may already be gone; SIGTERM handles the rest
        log(f"docker: could not list containers ({type(exc).__name__}); stopping the engine anyway")
        return
    if containers:
        log(f"docker: stopping {len(containers)} running container(s)...")
    threads = [threading.Thread(target=_quiet_stop, args=(c, grace_s)) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=grace_s + 30)
    client.close()


def _quiet_stop(container: Any, grace_s: int) -> None:
    with contextlib.suppress(Exception):
        container.stop(timeout=grace_s)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _unmount_under(prefixes: list[str]) -> None:
    """Lazily unmount what a killed dockerd may have left mounted under our folders."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    umount = which("umount")
    for point in sorted((p for p in points if any(p.startswith(x) for x in prefixes)), reverse=True):
        if umount:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run([umount, "-l", point], capture_output=True, timeout=10, check=False)
