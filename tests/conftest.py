"""Shared fixtures: the real local environment, started once per test session.

``local_env`` (session scope)
    Brings the whole local environment up (Docker engine, OCI registry, nginx router, model
    endpoint, page server) on FREE ports picked at run time, in the state folder
    ``$GENAIOPS_TEST_STATE_DIR`` (default ``<repo>/.genaiops/test``; it persists so Docker
    images stay cached between runs). Several pytest sessions may share that folder at once
    (each holds a lease; the last one to finish runs ``down``). Yields a :class:`LocalEnvHandle`:

    - ``settings``: the :class:`release.config.LocalSettings` used (ports, state_dir)
    - ``env``: the :class:`release.local_env.environment.LocalEnvironment`
    - ``state_dir``: Path of the state folder
    - ``docker_host``: for ``docker.DockerClient(base_url=local_env.docker_host)``
    - ``registry``: ``"127.0.0.1:PORT"`` (push ``127.0.0.1:PORT/repo:tag``)
    - ``router``: a :class:`release.local_env.router.Router` (``set_routes``, ``read_metrics``)
    - ``router_url``: ``http://127.0.0.1:PORT`` (flows at ``/<flow>/...``)
    - ``model_url``: ``http://127.0.0.1:PORT/v1`` (OpenAI-compatible base URL)
    - ``model_api_key``: the model endpoint's key (never print it)
    - ``pages_url``: ``http://127.0.0.1:PORT`` (``GET /pages/<file>``)

``model_endpoint`` (session scope)
    Only the local model endpoint (no Docker), in a temporary state folder on a free port.
    Yields a :class:`ModelEndpoint` with ``url`` (``http://127.0.0.1:PORT/v1``), ``base``
    (``http://127.0.0.1:PORT``), ``port`` and ``api_key``.

Both stop what they started at the end of the session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Example mode (release/config.py): the shipped dev/prod configs read ${VAR}s that a test machine
# does not set; tests and their subprocesses fill them with the documented example values.
# Commands that would reach Azure still refuse such a config (release.config.require_deployable).
os.environ.setdefault("GENAIOPS_EXAMPLE", "1")

from release.config import REPO_ROOT, LocalPorts, LocalSettings
from release.errors import UserError
from release.local_env.environment import LocalEnvironment
from release.local_env.net import close_all, port_of, reserve_ports
from release.local_env.procs import is_alive, start_ticks
from release.local_env.router import Router


@dataclass(frozen=True)
class LocalEnvHandle:
    settings: LocalSettings
    env: LocalEnvironment
    state_dir: Path
    docker_host: str
    registry: str
    router: Router
    router_url: str
    model_url: str
    model_api_key: str
    pages_url: str


@dataclass(frozen=True)
class ModelEndpoint:
    url: str
    base: str
    port: int
    api_key: str


def _log(line: str) -> None:
    print(f"[local_env] {line}", flush=True)


def free_settings(state_dir: Path) -> tuple[LocalSettings, dict[str, socket.socket]]:
    """LocalSettings on free ports and the state folder, with the listening sockets that hold
    those ports (bound to port 0 now); pass them on as ``LocalEnvironment(listeners=...)``."""
    held = reserve_ports(("registry", "router", "model", "pages"))
    ports = LocalPorts(**{name: port_of(sock) for name, sock in held.items()})
    return LocalSettings(state_dir=str(state_dir), ports=ports), held


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_leases(lease_dir: Path) -> list[Path]:
    lease_dir.mkdir(parents=True, exist_ok=True)
    live = []
    for lease in lease_dir.iterdir():
        pid = int(lease.name) if lease.name.isdigit() else 0
        if pid and is_alive(pid) and lease.read_text().strip() == str(start_ticks(pid)):
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return live


@pytest.fixture(scope="session")
def local_env() -> Iterator[LocalEnvHandle]:
    state_dir = Path(os.environ.get("GENAIOPS_TEST_STATE_DIR", REPO_ROOT / ".genaiops" / "test")).resolve()
    lock = state_dir / "fixture.lock"
    lease_dir = state_dir / "leases"
    saved = state_dir / "fixture-settings.json"
    with _flock(lock):
        others = _live_leases(lease_dir)
        settings = None
        if saved.exists():
            with contextlib.suppress(ValueError):
                settings = LocalSettings.model_validate(json.loads(saved.read_text()))
        env = None
        if settings is not None:
            env = LocalEnvironment(settings, log=_log)
            try:
                env.up()
            except UserError as exc:
                if others:
                    raise
                _log(f"saved ports unusable ({exc}); picking new ones")
                env.down()
                env = None
        if env is None:
            settings, held = free_settings(state_dir)
            env = LocalEnvironment(settings, log=_log, listeners=held)
            try:
                env.up()
            finally:
                close_all(held.values())
            saved.write_text(settings.model_dump_json())
        assert settings is not None
        (lease_dir / str(os.getpid())).write_text(str(start_ticks(os.getpid())))
    docker_host = env.docker_host()
    assert docker_host is not None
    try:
        yield LocalEnvHandle(
            settings=settings,
            env=env,
            state_dir=state_dir,
            docker_host=docker_host,
            registry=env.registry,
            router=env.router,
            router_url=env.router_url,
            model_url=env.model_url,
            model_api_key=env.model_api_key(),
            pages_url=env.pages_url,
        )
    finally:
        with _flock(lock):
            (lease_dir / str(os.getpid())).unlink(missing_ok=True)
            if not _live_leases(lease_dir):
                env.down()


@pytest.fixture(scope="session")
def model_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelEndpoint]:
    state_dir = tmp_path_factory.mktemp("model-endpoint")
    settings, held = free_settings(state_dir)
    env = LocalEnvironment(settings, log=_log, listeners={"model": held.pop("model")})
    close_all(held.values())
    env.up(only=["model"])
    port = env.settings.ports.model
    try:
        yield ModelEndpoint(
            url=env.model_url, base=f"http://127.0.0.1:{port}", port=port, api_key=env.model_api_key()
        )
    finally:
        env.down()
