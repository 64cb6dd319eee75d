"""The nginx router: weighted split, graceful reload without lost requests, metrics, guards."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from release.config import LocalPorts, LocalSettings
from release.local_env import net
from release.local_env.environment import LocalEnvironment
from release.local_env.router import DEPLOYMENT_HEADER, Route, Router, RouterError


class Upstream:
    """A tiny HTTP server on a free 127.0.0.1 port answering with its name (500 on /fail)."""

    def __init__(self, name: str) -> None:
        self.name = name
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status = 500 if self.path.startswith("/fail") else 200
                body = json.dumps({"served_by": outer.name, "path": self.path}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1})
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """Only the router component of a local environment (no Docker needed)."""
    ports = LocalPorts(
        registry=net.free_port(), router=net.free_port(), model=net.free_port(), pages=net.free_port()
    )
    settings = LocalSettings(state_dir=str(tmp_path_factory.mktemp("router-env")), ports=ports)
    env = LocalEnvironment(settings, log=lambda line: None)
    env.up(only=["router"])
    try:
        yield env.router
    finally:
        env.down()


@pytest.fixture
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {name: Upstream(name) for name in ("blue", "green")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, str, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        body = b"{}" if method == "POST" else None
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read() or b"{}")
        return response.status, response.getheader(DEPLOYMENT_HEADER) or "", payload
    finally:
        conn.close()


def test_no_deployment_is_503_json(router: Router) -> None:
    status, served_by, body = _get(router.port, "/nothing_here/score")
    assert status == 503 and served_by == ""
    assert body["flow"] == "nothing_here"


def test_weighted_split_and_metrics(router: Router, upstreams: dict[str, Upstream]) -> None:
    since = time.time()
    router.set_routes("split", {"blue": (upstreams["blue"].port, 90), "green": (upstreams["green"].port, 10)})
    assert router.flow_routes("split") == {
        "blue": Route(f"127.0.0.1:{upstreams['blue'].port}", 90),
        "green": Route(f"127.0.0.1:{upstreams['green'].port}", 10),
    }
    counts: Counter[str] = Counter()
    for _ in range(200):
        status, served_by, body = _get(router.port, "/split/score", "POST")
        assert status == 200
        assert served_by == body["served_by"]  # the header names the deployment that served
        assert body["path"] == "/score"  # the /<flow> prefix is stripped
        counts[served_by] += 1
    assert abs(counts["blue"] - 180) <= 6 and abs(counts["green"] - 20) <= 6, counts

    # weight 0 = not routed; errors (5xx) are counted per deployment
    router.set_routes("split", {"blue": (upstreams["blue"].port, 0), "green": (upstreams["green"].port, 100)})
    for _ in range(10):
        status, served_by, _ = _get(router.port, "/split/fail")
        assert (status, served_by) == (500, "green")

    metrics = router.read_metrics("split", since)
    assert metrics["blue"].requests == counts["blue"] and metrics["blue"].errors == 0
    assert metrics["green"].requests == counts["green"] + 10 and metrics["green"].errors == 10
    assert metrics["green"].p99_ms >= 0.0
    assert router.read_metrics("split", time.time() + 60) == {}

    router.set_routes("split", {})
    assert _get(router.port, "/split/score")[0] == 503


def test_switches_lose_no_request(router: Router, upstreams: dict[str, Upstream]) -> None:
    blue, green = upstreams["blue"].port, upstreams["green"].port
    router.set_routes("swap", {"blue": (blue, 100)})
    results: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        for _ in range(5000):  # bounded
            if stop.is_set():
                return
            results[_get(router.port, "/swap/score", "POST")[0]] += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for i in range(8):  # blue/green swaps and a canary step, each a graceful reload
            step = [{"green": (green, 100)}, {"blue": (blue, 50), "green": (green, 50)}][i % 2]
            router.set_routes("swap", step)
            time.sleep(0.1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert results[200] > 0 and set(results) == {200}, results


def test_dead_upstream_is_retried_on_the_next(router: Router, upstreams: dict[str, Upstream]) -> None:
    router.set_routes("retry", {"blue": (upstreams["blue"].port, 50), "green": (upstreams["green"].port, 50)})
    upstreams["blue"].stop()
    for _ in range(20):
        status, served_by, _ = _get(router.port, "/retry/score", "POST")
        assert (status, served_by) == (200, "green")


def test_bad_routes_change_nothing(router: Router, upstreams: dict[str, Upstream], tmp_path: Path) -> None:
    router.set_routes("guard", {"blue": (upstreams["blue"].port, 100)})
    before = router.conf.read_text()
    for bad in (
        {"blue": (upstreams["blue"].port, 101)},
        {"blue": ("10.0.0.1:80", 100)},
        {"bad name!": (upstreams["blue"].port, 100)},
    ):
        with pytest.raises(RouterError):
            router.set_routes("guard", bad)  # type: ignore[arg-type]
    with pytest.raises(RouterError):
        router.set_routes("../etc", {})

    class BrokenRouter(Router):
        def render(self, routes, generation):  # type: ignore[no-untyped-def]
            return super().render(routes, generation).replace("worker_connections", "no_such_directive")

    broken = BrokenRouter(router.state_dir, router.port)
    with pytest.raises(RouterError, match="nginx could not check"):
        broken.set_routes("guard", {"green": (upstreams["green"].port, 100)})
    assert router.conf.read_text() == before  # nginx -t refused it: the live config stayed
    assert router.flow_routes("guard") == {"blue": Route(f"127.0.0.1:{upstreams['blue'].port}", 100)}
    got = _get(router.port, "/guard/score")
    assert got[1] == "blue"


def test_set_routes_needs_a_running_router(tmp_path: Path) -> None:
    stopped = Router(tmp_path, net.free_port())
    with pytest.raises(RouterError, match="local up"):
        stopped.set_routes("flow", {"blue": (net.free_port(), 100)})
    assert stopped.routes() == {}
