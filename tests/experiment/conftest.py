"""Fixtures for experiment tests: the real model endpoint and page server on free ports.

``services`` (session): both servers started through the local-environment API in a temporary
state folder, stopped at the end. ``exp`` (function): points config/local.yaml at them through
the environment (ports, key), gives fresh reports and state folders, and resets injected faults.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from release.config import LocalPorts, LocalSettings
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port

CANARY_KEY = "sk-canary-experiment-7f3a9c"


@dataclass(frozen=True)
class Services:
    model_port: int
    pages_port: int
    api_key: str

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.model_port}{path}",
            data=data,
            method="POST" if data else "GET",
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def faults(self, **settings: Any) -> None:
        self.admin("/admin/faults", settings)

    def completions(self) -> int:
        return int(self.admin("/admin/stats")["completions"])

    def requests(self) -> int:
        return int(self.admin("/admin/stats")["requests"])


@dataclass(frozen=True)
class Exp:
    services: Services
    reports: Path
    state: Path

    def args(self, command: str, flow: str, *extra: str) -> list[str]:
        return [
            command,
            "--flow",
            flow,
            "--env",
            "local",
            "--reports-dir",
            str(self.reports),
            "--state-dir",
            str(self.state),
            "--no-progress",
            "--no-start",
            *extra,
        ]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    state_dir = tmp_path_factory.mktemp("experiment-services")
    settings = LocalSettings(
        state_dir=str(state_dir),
        ports=LocalPorts(registry=free_port(), router=free_port(), model=free_port(), pages=free_port()),
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("LOCAL_MODEL_API_KEY", CANARY_KEY)
    # Pay prompt flow's one-time load now (the engine keeps its log handlers on the live streams,
    # so where the first load happens no longer matters: test_cache_identity_and_streams.py).
    from release.engine import get_engine

    get_engine(state_dir / "promptflow").warm_up()  # type: ignore[attr-defined]
    env = LocalEnvironment(settings, log=lambda line: None)
    env.up(only=["model", "pages"])
    try:
        yield Services(settings.ports.model, settings.ports.pages, CANARY_KEY)
    finally:
        env.down()
        mp.undo()


@pytest.fixture()
def exp(services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Exp]:
    monkeypatch.setenv("GENAIOPS_MODEL_PORT", str(services.model_port))
    monkeypatch.setenv("GENAIOPS_PAGES_PORT", str(services.pages_port))
    monkeypatch.setenv("LOCAL_MODEL_API_KEY", services.api_key)
    services.faults(latency_ms=0, rate_limit_rate=0, error_rate=0, retry_after_s=1)
    yield Exp(services, tmp_path / "reports", tmp_path / "state")
    services.faults(latency_ms=0, rate_limit_rate=0, error_rate=0, retry_after_s=1)
