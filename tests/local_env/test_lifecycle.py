"""`genaiops local up | status | down` against the real processes (dockerd, registry, nginx, ...)."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import docker
import pytest

from release.config import REPO_ROOT, LocalPorts, LocalSettings
from release.errors import UserError
from release.local_env import net, procs
from release.local_env.environment import DEFAULT_DOCKER_SOCKET, LocalEnvironment

GENAIOPS = [sys.executable, "-m", "release"]
CANARY = "sk-canary-7f3e9a1c5b2d4e6f8a0b"


def _free_ports() -> dict[str, int]:
    return {name: net.free_port() for name in ("registry", "router", "model", "pages")}


def _cli_env(state_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.update(
        GENAIOPS_LOCAL_STATE_DIR=str(state_dir),
        GENAIOPS_REGISTRY_PORT=str(ports["registry"]),
        GENAIOPS_ROUTER_PORT=str(ports["router"]),
        GENAIOPS_MODEL_PORT=str(ports["model"]),
        GENAIOPS_PAGES_PORT=str(ports["pages"]),
        LOCAL_MODEL_API_KEY=CANARY,
    )
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GENAIOPS, "local", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def _run_sleeping_container(docker_host: str) -> None:
    """Import a tiny image (coreutils sleep + libc from this machine) and run it detached."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in ("/usr/bin/sleep", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"):
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        client.api.import_image_from_data(buffer.getvalue(), repository="genaiops-test/sleep", tag="1")
        container = client.containers.run(
            "genaiops-test/sleep:1", ["/usr/bin/sleep", "600"], detach=True, network_mode="host"
        )
        container.reload()
        assert container.status == "running"
    finally:
        client.close()


def _ours(state_dir: Path, runtime_dir: str) -> list[int]:
    """Every live process whose command line names our state or runtime folder."""
    needles = (str(state_dir), runtime_dir)
    me = os.getpid()
    return [
        pid
        for pid in procs.all_pids()
        if pid != me and procs.is_alive(pid) and any(n in procs.cmdline(pid) for n in needles)
    ]


def test_up_status_up_down_via_cli(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    ports = _free_ports()
    env = _cli_env(state_dir, ports)
    external_engine = net.docker_ping(DEFAULT_DOCKER_SOCKET)

    try:
        up = _run(["up"], env)
        assert up.returncode == 0, up.stderr + up.stdout
        assert "ready in" in up.stdout
        status = _run(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        components = {c["name"]: c for c in json.loads(status.stdout)["components"]}
        assert set(components) == {"docker", "registry", "router", "model", "pages"}
        for name in ("registry", "router", "model", "pages"):
            assert components[name]["state"] == "healthy", components[name]
            assert components[name]["port"] == ports[name]
            assert procs.is_alive(components[name]["pid"])
        docker = components["docker"]
        if external_engine:
            assert docker["state"] == "external" and docker["owned"] is False
        else:  # the CI path: no engine runs, so `up` started our own dockerd
            assert docker["state"] == "healthy" and docker["owned"] is True
            assert "genaiops-" in docker["url"]
            assert net.docker_ping(docker["url"])
        pids = {n: c["pid"] for n, c in components.items()}

        # Real services answer on 127.0.0.1.
        assert net.http_status("/v2/", ports["registry"]) == 200
        assert net.http_status("/health", ports["pages"]) == 200
        assert net.http_status("/web_classification/score", ports["router"]) == 503
        assert net.http_status("/health", ports["model"]) == 200

        if not external_engine:  # a running container: its containerd shim must go with `down`
            _run_sleeping_container(docker["url"])

        again = _run(["up"], env)
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in again.stdout
        status2 = json.loads(_run(["status", "--json"], env).stdout)
        assert {c["name"]: c["pid"] for c in status2["components"]} == pids

        assert CANARY not in procs.cmdline(pids["model"])  # the key is never on a command line
        runtime_dir = LocalEnvironment(LocalSettings(state_dir=str(state_dir))).runtime_dir
        running = [procs.cmdline(pid) for pid in _ours(state_dir, str(runtime_dir))]
        assert running, "the environment's processes should be visible in /proc"
        if not external_engine:
            assert any("containerd-shim" in line for line in running), running

        down = _run(["down"], env)
        assert down.returncode == 0, down.stderr + down.stdout
        for pid in pids.values():
            assert pid is None or not procs.is_alive(pid)
        assert _ours(state_dir, str(runtime_dir)) == []
        for port in ports.values():
            assert net.port_is_free(port), port
        if external_engine:
            assert net.docker_ping(DEFAULT_DOCKER_SOCKET), "an engine we did not start must keep running"
        else:
            assert not net.docker_ping(docker["url"])
            assert not runtime_dir.exists()

        # The canary key reached the model server through its environment only.
        shown = up.stdout + up.stderr + status.stdout + again.stdout + down.stdout + down.stderr
        assert CANARY not in shown
        for path in state_dir.rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                assert CANARY.encode() not in path.read_bytes(), path
    finally:  # a failed assertion must not leave the environment running
        _run(["down"], env)


def test_taken_port_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    ports = _free_ports()
    settings = LocalSettings(state_dir=str(tmp_path), ports=LocalPorts(**ports))
    env = LocalEnvironment(settings, log=lambda line: None)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports["router"]))
        blocker.listen()
        with pytest.raises(UserError) as caught:
            env.up()
    message = str(caught.value)
    assert str(ports["router"]) in message and "local.ports.router" in message
    assert all(s.state == "stopped" for s in env.status())
    assert _ours(tmp_path, str(env.runtime_dir)) == []


def test_failure_midway_stops_what_was_started(tmp_path: Path) -> None:
    """The page server cannot bind (its port is taken after the check): all else is stopped."""
    ports = _free_ports()
    settings = LocalSettings(state_dir=str(tmp_path), ports=LocalPorts(**ports))
    blocker = socket.socket()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("model: ready"):  # every other component is up by now
            blocker.bind(("127.0.0.1", ports["pages"]))
            blocker.listen()

    env = LocalEnvironment(settings, log=log)
    try:
        with pytest.raises(UserError, match="pages"):
            env.up(only=["registry", "router", "model", "pages"])
    finally:
        blocker.close()
        env.down()  # a no-op when the rollback worked (asserted below via /proc)
    assert any(line.startswith("registry: ready") for line in lines)
    assert all(s.state == "stopped" for s in env.status())
    assert _ours(tmp_path, str(env.runtime_dir)) == []
    for name in ("registry", "router", "model"):
        assert net.port_is_free(ports[name])


def test_generated_model_key_is_private_and_stable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_MODEL_API_KEY", raising=False)
    env = LocalEnvironment(LocalSettings(state_dir=str(tmp_path)), log=lambda line: None)
    key = env.model_api_key()
    assert len(key) >= 32
    key_file = tmp_path / "model_api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert LocalEnvironment(LocalSettings(state_dir=str(tmp_path))).model_api_key() == key


def test_model_endpoint_fixture_answers(model_endpoint) -> None:  # type: ignore[no-untyped-def]
    assert net.http_status("/health", model_endpoint.port) == 200


def test_pages_are_served_from_flows(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for flow, name, text in (("a_flow", "page.html", "<p>a</p>"), ("b_flow", "notes.txt", "b")):
        (root / "flows" / flow / "pages").mkdir(parents=True)
        (root / "flows" / flow / "pages" / name).write_text(text)
    (root / "secret.txt").write_text("not a page")
    ports = _free_ports()
    settings = LocalSettings(state_dir=str(tmp_path / "state"), ports=LocalPorts(**ports))
    env = LocalEnvironment(settings, root=root, log=lambda line: None)
    env.up(only=["pages"])
    try:
        assert net.http_status("/pages/page.html", ports["pages"]) == 200
        assert net.http_status("/pages/notes.txt", ports["pages"]) == 200
        assert net.http_status("/pages/..%2F..%2F..%2Fsecret.txt", ports["pages"]) == 404
        assert net.http_status("/pages/missing.html", ports["pages"]) == 404
        assert net.http_json("/health", ports["pages"]) == {"status": "ok", "pages": 2}
    finally:
        env.down()
    assert net.port_is_free(ports["pages"])


def test_model_key_change_restarts_the_model_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = _free_ports()
    settings = LocalSettings(state_dir=str(tmp_path), ports=LocalPorts(**ports))
    monkeypatch.setenv("LOCAL_MODEL_API_KEY", "sk-first-key-for-this-test")
    env = LocalEnvironment(settings, log=lambda line: None)
    try:
        assert env.up(only=["model"]).started == ["model"]
        assert env.up(only=["model"]).started == []
        monkeypatch.setenv("LOCAL_MODEL_API_KEY", "sk-second-key-for-this-test")
        assert env.up(only=["model"]).started == ["model"]
        conn = http.client.HTTPConnection("127.0.0.1", ports["model"], timeout=10)
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer sk-second-key-for-this-test"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        env.down()


def test_up_restarts_a_dead_component_only(tmp_path: Path) -> None:
    # the ports stay bound from choosing them until the servers serve on them (no race)
    held = net.reserve_ports(("registry", "router", "model", "pages"))
    ports = {name: net.port_of(sock) for name, sock in held.items()}
    env = LocalEnvironment(
        LocalSettings(state_dir=str(tmp_path), ports=LocalPorts(**ports)),
        log=lambda line: None,
        listeners=held,
    )
    try:
        env.up(only=["router", "pages"])
        before = {s.name: s.pid for s in env.status()}
        os.kill(before["pages"], signal.SIGKILL)
        procs.wait_gone([before["pages"]], 10)
        assert {s.name: s.state for s in env.status()}["pages"] == "stopped"
        assert env.up(only=["router", "pages"]).started == ["pages"]
        after = {s.name: s.pid for s in env.status()}
        assert after["router"] == before["router"] and after["pages"] != before["pages"]
    finally:
        env.down()
        net.close_all(held.values())
    assert _ours(tmp_path, str(env.runtime_dir)) == []


def test_a_stale_socket_is_not_an_engine(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens
    assert stale.exists() and not net.docker_ping(f"unix://{stale}", timeout_s=2)
    with socket.socket(socket.AF_UNIX) as mute:  # listens but never answers like Docker
        mute.bind(str(tmp_path / "mute.sock"))
        mute.listen()
        assert not net.docker_ping(f"unix://{tmp_path / 'mute.sock'}", timeout_s=0.5)
    assert not net.docker_ping(f"unix://{tmp_path / 'missing.sock'}")
