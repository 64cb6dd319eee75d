"""Request telemetry of the flow server, at the HTTP boundary of Application Insights ingestion.

The real server (``python -m release.serving``: gunicorn with two workers, the tiny flow through
the real prompt flow engine) runs as a subprocess with ``APPLICATIONINSIGHTS_CONNECTION_STRING``
pointing at a fake ingestion endpoint on 127.0.0.1 (``POST /v2.1/track``, gzip JSON envelopes).
The batch delay is one minute, so the envelopes that arrive were flushed by the graceful stop.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from release.serving.settings import StartupError, load_settings
from release.serving.telemetry import config_from_environ
from tests.release.serving_process import TINY_FLOW as FIXTURE_FLOW
from tests.release.serving_process import manifest as serving_manifest
from tests.release.serving_process import start_server

CANARY = "canary-" + uuid.uuid4().hex
IKEY = "00000000-0000-0000-0000-000000000000"


@dataclass
class Ingestion:
    """A fake Application Insights ingestion endpoint: stores every POSTed body."""

    paths: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def envelopes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            bodies = list(self.bodies)
        for raw in bodies:
            text = raw.decode("utf-8")
            parsed = json.loads(text) if text.lstrip().startswith("[") else None
            if parsed is None:  # newline-delimited JSON
                parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
            out.extend(parsed)
        return out


def _ingestion_server(store: Ingestion) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            count = 0
            with store.lock:
                store.paths.append(self.path)
                store.bodies.append(body)
                count = body.count(b'"iKey"')
            answer = json.dumps({"itemsReceived": count, "itemsAccepted": count, "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@dataclass(frozen=True)
class Served:
    ingestion: Ingestion
    service_name: str
    connection_string: str
    statuses: list[int]  # of the /score requests sent, in order
    posts_before_stop: int
    exit_code: int
    log: str


@dataclass(frozen=True)
class Run:
    statuses: list[int]  # of the /score requests sent, in order
    posts_before_stop: int
    exit_code: int
    log: str


def _run_server(
    root: Path, connection_string: str, service_name: str, sends: list[Any], store: Ingestion | None
) -> Run:
    """Start the server, wait until healthy, send ``sends`` to /score, stop it gracefully."""
    flow_dir = root / "flow"
    shutil.copytree(FIXTURE_FLOW, flow_dir)
    env = {
        "LOCAL_OPENAI_API_KEY": CANARY,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string,
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only the flush on stop can send within this test
    }
    server = start_server(root, flow_dir, env)
    try:
        server.wait_ready()
        url = server.url
        statuses: list[int] = []
        with requests.Session() as http:
            for body in sends:
                if isinstance(body, bytes):
                    r = http.post(f"{url}/score", data=body, timeout=30)
                else:
                    r = http.post(f"{url}/score", json=body, timeout=30)
                statuses.append(r.status_code)
            assert http.get(f"{url}/health", timeout=5).status_code == 200  # not a /score request
        time.sleep(0.3)
        posts_before_stop = 0
        if store is not None:
            with store.lock:
                posts_before_stop = len(store.bodies)
        exit_code = server.stop()
        return Run(statuses, posts_before_stop, exit_code, server.log())
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = Ingestion()
    ingestion = _ingestion_server(store)
    threading.Thread(target=ingestion.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    connection_string = (
        f"InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:{ingestion.server_address[1]}/"
    )
    service_name = f"blue-{uuid.uuid4().hex[:8]}"
    sends: list[Any] = [{"text": "hi"}, {"text": "fail"}, {}, {"text": "again"}, b"{not json"]
    sends += [{"text": "fail"}, {"text": "three"}]
    try:
        run = _run_server(tmp_path_factory.mktemp("telemetry"), connection_string, service_name, sends, store)
        yield Served(
            ingestion=store,
            service_name=service_name,
            connection_string=connection_string,
            statuses=run.statuses,
            posts_before_stop=run.posts_before_stop,
            exit_code=run.exit_code,
            log=run.log,
        )
    finally:
        ingestion.shutdown()
        ingestion.server_close()


def _requests(served: Served) -> list[dict[str, Any]]:
    return [e for e in served.ingestion.envelopes() if e.get("data", {}).get("baseType") == "RequestData"]


def test_requests_answered_as_expected(served: Served) -> None:
    assert served.statuses == [200, 500, 400, 200, 400, 500, 200]
    assert served.exit_code == 0, served.log[-3000:]


def test_one_request_envelope_per_score_request_flushed_on_stop(served: Served) -> None:
    assert served.posts_before_stop == 0  # batched: nothing was sent before the graceful stop
    assert served.ingestion.paths and all(
        p.startswith("/v2") and p.endswith("/track") for p in served.ingestion.paths
    )
    envelopes = _requests(served)
    assert len(envelopes) == len(served.statuses)
    assert sorted(int(e["data"]["baseData"]["responseCode"]) for e in envelopes) == sorted(served.statuses)
    for envelope in envelopes:
        assert envelope["name"] == "Microsoft.ApplicationInsights.Request"
        assert envelope["iKey"] == "00000000-0000-0000-0000-000000000000"
        assert envelope["tags"]["ai.cloud.role"] == served.service_name
        assert envelope["tags"]["ai.operation.name"] == "POST /score"
        data = envelope["data"]["baseData"]
        assert data["name"] == "POST /score"
        code = int(data["responseCode"])
        # Application Insights marks 4xx and 5xx server requests failed; the canary counts 5xx
        assert data["success"] is (code < 400), data
        days, _, clock = data["duration"].partition(".")
        hours, minutes, seconds = clock.split(":")
        assert days == "0" and hours == "00" and minutes == "00" and 0 <= float(seconds) < 30, data
        assert data["url"].endswith("/score")
    assert max(float(e["data"]["baseData"]["duration"].rsplit(":", 1)[1]) for e in envelopes) > 0


def test_no_secret_in_telemetry_or_logs(served: Served) -> None:
    for body in served.ingestion.bodies:
        assert CANARY.encode() not in body
    assert CANARY not in served.log
    assert served.connection_string not in served.log
    assert IKEY not in served.log
    assert "sending request telemetry as " + served.service_name in served.log


def test_telemetry_off_without_connection_string() -> None:
    assert config_from_environ({"OTEL_SERVICE_NAME": "blue"}) is None
    assert config_from_environ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is None


def test_telemetry_settings_from_environment() -> None:
    base = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={IKEY};IngestionEndpoint=https://x/"
    }
    config = config_from_environ(base)
    assert config is not None and not config.aad and config.service_name == "genaiops-flow"
    assert IKEY not in repr(config)
    config = config_from_environ(
        {
            **base,
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=abc",
            "OTEL_SERVICE_NAME": "green",
        }
    )
    assert config is not None and config.aad and config.client_id == "abc" and config.service_name == "green"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "IngestionEndpoint=https://x/"}, "InstrumentationKey"),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CANARY}, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
        (
            {
                "APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={IKEY}",
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=Key",
            },
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        ),
    ],
)
def test_bad_telemetry_settings_stop_the_start(tmp_path: Path, variables: dict[str, str], named: str) -> None:
    manifest = tmp_path / "serving.json"
    manifest.write_text(json.dumps(serving_manifest(FIXTURE_FLOW)))
    env = {"GENAIOPS_SERVING_MANIFEST": str(manifest), "LOCAL_OPENAI_API_KEY": "k", **variables}
    with pytest.raises(StartupError) as raised:
        load_settings(env)
    assert named in str(raised.value)
    assert CANARY not in str(raised.value)


def test_unreachable_ingestion_fails_no_request_and_stop_stays_bounded(tmp_path: Path) -> None:
    with socket.socket() as bound:  # bound, never listening: every export is refused
        bound.bind(("127.0.0.1", 0))
        closed = bound.getsockname()[1]
        connection_string = f"InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:{closed}/"
        run = _run_server(tmp_path, connection_string, "green", [{"text": "hi"}, {"text": "fail"}], None)
    assert run.statuses == [200, 500]
    assert run.exit_code == 0, run.log[-3000:]  # stopped before the master's kill deadline
    assert connection_string not in run.log and IKEY not in run.log and f":{closed}/" not in run.log
