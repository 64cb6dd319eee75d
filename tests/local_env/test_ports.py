"""Race-free ports: our servers are handed the bound socket; third-party servers retry a lost bind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from release.config import LocalPorts, LocalSettings
from release.local_env import net, procs
from release.local_env.environment import LocalEnvironment


def _env(tmp_path: Path, ports: dict[str, int], **listeners: object) -> LocalEnvironment:
    settings = LocalSettings(state_dir=str(tmp_path), ports=LocalPorts(**ports))
    return LocalEnvironment(settings, log=lambda line: None, listeners=listeners)  # type: ignore[arg-type]


def test_our_servers_serve_on_the_socket_reserved_for_them(tmp_path: Path) -> None:
    held = net.reserve_ports(("registry", "router", "model", "pages"))
    ports = {name: net.port_of(sock) for name, sock in held.items()}
    assert not net.port_is_free(ports["pages"]) and not net.port_is_free(ports["model"])  # held from now on
    env = _env(tmp_path, ports, model=held["model"], pages=held["pages"])
    try:
        env.up(only=["model", "pages"])
        status = {s.name: s for s in env.status()}
        for name in ("model", "pages"):
            assert status[name].state == "healthy" and status[name].port == ports[name]
            assert "--fd" in procs.cmdline(status[name].pid or 0)
        assert net.http_status("/health", ports["pages"]) == 200
        assert net.http_status("/health", ports["model"]) == 200
    finally:
        env.down()
        net.close_all(held.values())
    assert net.port_is_free(ports["pages"]) and net.port_is_free(ports["model"])


def test_a_third_party_server_retries_a_port_taken_while_it_starts(tmp_path: Path) -> None:
    blocker = net.listening_socket(0)  # another process's listener on the registry's port
    port = net.port_of(blocker)
    reservation = net.listening_socket(0)  # ours: released before the registry starts
    env = _env(tmp_path, {"registry": port, "router": 1, "model": 1, "pages": 1}, registry=reservation)
    log_file = tmp_path / "logs" / "registry.log"

    def release_after_the_first_failure() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log_file.is_file() and "address already in use" in log_file.read_text(errors="replace"):
                break
            time.sleep(0.02)
        blocker.close()

    watcher = threading.Thread(target=release_after_the_first_failure)
    watcher.start()
    try:
        started = env.up(only=["registry"]).started
        assert started == ["registry"]
        assert "address already in use" in log_file.read_text(errors="replace")  # it did lose once
        assert net.http_status("/v2/", port) == 200
    finally:
        watcher.join(timeout=150)
        blocker.close()
        env.down()
