"""The flow server's HTTP contract, against the real server (gunicorn, the tiny flow, prompt flow).

Routes and bodies as prompt flow's serving app (``/score``, ``/health``, ``/version``,
``/swagger.json``), the errors (400 naming a missing input, 413 over 10 MiB, 415 for non-JSON),
chunked request bodies on a keep-alive connection, worker restarts and the graceful stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from release.local_env import procs
from tests.release.serving_process import TINY_FLOW, ServerProcess, start_server

KEY = "canary-serving-" + os.urandom(6).hex()
ELEVEN_MIB = 11 * 1024 * 1024
WAIT_S = 60.0
SLOW_PATH = """    if text.startswith("/"):  # a request held in flight until that file exists (30 s at most)
        import time

        Path(text + ".started").write_text("")
        deadline = time.monotonic() + 30
        while not Path(text).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
"""


def _tiny_with_a_slow_path(root: Path) -> Path:
    """The tiny flow, whose answer node waits for a file when the input is a path."""
    flow = root / "flow"
    shutil.copytree(TINY_FLOW, flow)
    source = (flow / "answer.py").read_text()
    assert '    if text == "fail":' in source
    (flow / "answer.py").write_text(
        source.replace('    if text == "fail":', SLOW_PATH + '    if text == "fail":')
    )
    return flow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("serving")
    srv = start_server(root, _tiny_with_a_slow_path(root), {"LOCAL_OPENAI_API_KEY": KEY}).wait_ready()
    try:
        yield srv
    finally:
        code = srv.stop()
        assert code == 0, srv.log()[-3000:]
        assert KEY not in srv.log()


def _raw(server: ServerProcess, data: bytes, responses: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection and read ``responses`` answers (Content-Length framed)."""
    port = int(server.url.rsplit(":", 1)[1])
    out: list[tuple[int, dict[str, str], bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        buffer = b""
        while len(out) < responses:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(out)} answers: {buffer!r}"
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                chunk = sock.recv(65536)
                assert chunk, "connection closed inside a body"
                buffer += chunk
            out.append((int(lines[0].split()[1]), headers, buffer[:length]))
            buffer = buffer[length:]
    return out


def test_score_health_version(server: ServerProcess) -> None:
    ok = requests.post(f"{server.url}/score", json={"text": "hello"}, timeout=30)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/json"
    assert ok.json()["answer"] == "Echo: hello"
    health = requests.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "Healthy"
    version = requests.get(f"{server.url}/version", timeout=10).json()
    assert version["status"] == "Healthy" and version["flow"] == "tiny" and version["version"]
    assert requests.get(f"{server.url}/nothing", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/score", timeout=10).status_code == 405


def test_swagger_describes_inputs_and_outputs(server: ServerProcess) -> None:
    doc = requests.get(f"{server.url}/swagger.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/score"]["post"]
    request_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["properties"] == {"text": {"type": "string"}}
    assert request_schema["required"] == ["text"]
    response_schema = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(response_schema["properties"]) == {"answer", "key_fingerprint"}
    assert {"400", "413", "415"} <= set(post["responses"])


def test_missing_input_is_400_naming_it(server: ServerProcess) -> None:
    missing = requests.post(f"{server.url}/score", json={"other": 1}, timeout=30)
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["code"] == "InvalidInput" and "'text'" in error["message"]
    assert requests.post(f"{server.url}/score", json=[1], timeout=30).status_code == 400
    assert requests.post(f"{server.url}/score", data=b"{not json", timeout=30).json()["error"]["code"] == (
        "InvalidJson"
    )


def test_non_json_content_type_is_415(server: ServerProcess) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        answer = requests.post(
            f"{server.url}/score", data=b'{"text": "x"}', headers={"Content-Type": content_type}, timeout=30
        )
        assert answer.status_code == 415, content_type
        assert answer.json()["error"]["code"] == "UnsupportedMediaType"
    charset = requests.post(
        f"{server.url}/score",
        data=b'{"text": "x"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert charset.status_code == 200


def test_eleven_mib_body_is_413(server: ServerProcess) -> None:
    body = json.dumps({"text": "x" * ELEVEN_MIB}).encode()
    declared = requests.post(
        f"{server.url}/score", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:  # no length: requests sends Transfer-Encoding: chunked
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    chunked = requests.post(
        f"{server.url}/score", data=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413
    # a body just under the limit is served
    fits = requests.post(f"{server.url}/score", json={"text": "y" * (9 * 1024 * 1024)}, timeout=60)
    assert fits.status_code == 200 and len(fits.json()["answer"]) > 9 * 1024 * 1024


def test_chunked_body_then_next_request_on_the_same_connection(server: ServerProcess) -> None:
    body = b'{"text": "chunked body"}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:15], body[15:]))
    request = (
        b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    follow = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    answers = _raw(server, request + follow, 2)
    (status, _, data), (next_status, _, next_data) = answers
    assert status == 200 and json.loads(data)["answer"] == "Echo: chunked body"
    assert next_status == 200 and json.loads(next_data)["status"] == "Healthy"


def _workers(server: ServerProcess) -> set[int]:
    return {pid for pid in procs.all_pids() if _parent(pid) == server.proc.pid}


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_a_dead_worker_is_replaced(server: ServerProcess) -> None:
    before = _workers(server)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    after: set[int] = set()
    while time.monotonic() < deadline:
        after = _workers(server)
        if len(after) == 2 and victim not in after:
            break
        time.sleep(0.2)
    assert len(after) == 2 and victim not in after, server.log()[-2000:]
    answers = {
        requests.post(f"{server.url}/score", json={"text": "again"}, timeout=30).status_code for _ in range(6)
    }
    assert answers == {200}


def test_sigterm_drains_requests_in_flight(tmp_path: Path) -> None:
    srv = start_server(tmp_path, _tiny_with_a_slow_path(tmp_path), {"LOCAL_OPENAI_API_KEY": KEY}).wait_ready()
    release = tmp_path / "release-the-request"
    results: list[requests.Response] = []
    started = threading.Event()

    def call() -> None:
        started.set()
        results.append(requests.post(f"{srv.url}/score", json={"text": str(release)}, timeout=60))

    thread = threading.Thread(target=call)
    try:
        thread.start()
        started.wait(10)
        in_flight = Path(f"{release}.started")
        deadline = time.monotonic() + WAIT_S
        while not in_flight.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_flight.exists(), srv.log()[-2000:]
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None  # still draining: the request is not answered yet
        release.write_text("go")
        thread.join(30)
        assert results and results[0].status_code == 200
        assert results[0].json()["answer"] == f"Echo: {release}"
        assert srv.proc.wait(timeout=30) == 0, srv.log()[-3000:]
    finally:
        release.touch()
        thread.join(30)
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(timeout=10)


def test_a_flow_that_cannot_load_stops_the_server(tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    shutil.copytree(TINY_FLOW, flow)
    (flow / "answer.py").write_text("raise ImportError('broken on purpose')\n")
    srv = start_server(tmp_path, flow, {"LOCAL_OPENAI_API_KEY": KEY})
    try:
        code = srv.proc.wait(timeout=WAIT_S)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
    assert code != 0
    assert "broken on purpose" in srv.log() or "failed to boot" in srv.log().lower(), srv.log()[-3000:]
