"""The flow server (``python -m release.serving``) as a subprocess on 127.0.0.1, for the serving tests.

The test binds the listening socket (port 0: the kernel picks a free port) and hands it to the
server as ``LISTEN_FD`` (gunicorn's ``fd://``), so no other process can take the port in between.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_FLOW = Path(__file__).parent / "fixtures" / "tiny_flow"
READY_WAIT_S = 180.0  # two workers loading prompt flow on a busy 2-core machine
STOP_WAIT_S = 20.0


def manifest(flow_dir: Path, flow: str = "tiny") -> dict[str, Any]:
    return {
        "flow": flow,
        "flow_dir": str(flow_dir),
        "variant": {"variants": {}, "params": {}},
        "connection_overrides": {},
        "connections": [
            {
                "name": "local_openai",
                "category": "OpenAI",
                "target": "http://127.0.0.1:9/v1",
                "key_env": "LOCAL_OPENAI_API_KEY",
                "base_env": "LOCAL_OPENAI_API_BASE",
            }
        ],
    }


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_ready(self) -> ServerProcess:
        """Until ``GET /health`` answers 200; on failure the server is killed, then the test fails."""
        deadline = time.monotonic() + READY_WAIT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError("server not ready in time or exited:\n" + self.log()[-3000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM (graceful), then the exit code; killed if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("the server did not stop within the graceful timeout") from None
        return int(self.proc.returncode)


def start_server(root: Path, flow_dir: Path, env: dict[str, str] | None = None) -> ServerProcess:
    """Start the server for ``flow_dir`` (copied under ``root``) on a socket bound here."""
    root.mkdir(parents=True, exist_ok=True)
    manifest_file = root / "serving.json"
    manifest_file.write_text(json.dumps(manifest(flow_dir)))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "PYTHONPATH": str(REPO_ROOT),
        "PF_HOME_DIRECTORY": str(root / ".promptflow"),
        "PROMPTFLOW_RUN_MODE": "serving",
        "GENAIOPS_SERVING_MANIFEST": str(manifest_file),
        "LISTEN_FD": str(listener.fileno()),
        "WORKERS": "2",
        **(env or {}),
    }
    log_file = root / "server.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "release.serving"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    listener.close()  # the server holds its own copy
    return ServerProcess(proc, f"http://127.0.0.1:{port}", log_file)
