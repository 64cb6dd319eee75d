"""The line cache follows the model behind the connection; prompt flow leaves no streams behind.

* the cache key covers the resolved connection (target URL, api version) and the model's advertised
  identity (``system_fingerprint`` of the local model endpoint): a change re-runs, no change reuses;
* after a pipeline run ``sys.stdout``/``sys.stderr`` are the objects they were before;
* prompt flow loaded first inside a ``capsys`` test does not make a later test's warnings loop
  (RecursionError) or write to a closed stream (a real pytest process, in a subprocess).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from release.engine.base import ConnectionSpec
from release.experiment import pipeline
from release.experiment.model_identity import advertised_models, model_identity
from release.experiment.pipeline import Options
from release.local_env.model_server import SYSTEM_FINGERPRINT, ModelServer, serve
from release.local_env.net import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class OwnServer:
    """A real model endpoint (HTTP on 127.0.0.1) in this process, whose fingerprint a test can change."""

    app: ModelServer
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def own_server(services) -> Iterator[OwnServer]:  # type: ignore[no-untyped-def]
    app = ModelServer(services.api_key)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    urls: list[str] = []

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    def main() -> None:
        loop.run_until_complete(serve(app, "127.0.0.1", 0, on_ready, stop))

    thread = threading.Thread(target=main, name="own-model-server", daemon=True)
    thread.start()
    assert ready.wait(timeout=30), "the model endpoint did not start"
    try:
        yield OwnServer(app, urls[0])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def _conn(server: OwnServer, key: str, **more: str) -> ConnectionSpec:
    return ConnectionSpec("local_openai", "OpenAI", f"{server.url}/v1", key, **more)


def test_model_identity_follows_target_version_and_fingerprint(own_server, services) -> None:  # type: ignore[no-untyped-def]
    key = services.api_key
    before = own_server.app.requests
    first = model_identity([_conn(own_server, key)])
    assert own_server.app.requests - before == 1  # one listing per connection, no completion
    assert advertised_models(_conn(own_server, key)) == [
        {"id": "local-model", "system_fingerprint": SYSTEM_FINGERPRINT}
    ]
    assert model_identity([_conn(own_server, key)]) == first  # nothing changed: same identity
    assert model_identity([_conn(own_server, key, api_version="2024-10-21")]) != first
    other = ConnectionSpec("local_openai", "OpenAI", f"http://127.0.0.1:{services.model_port}/v1", key)
    assert model_identity([other]) != first  # another target
    own_server.app.fingerprint = "fp_responder_changed"
    try:
        assert model_identity([_conn(own_server, key)]) != first  # the model's behaviour changed
    finally:
        own_server.app.fingerprint = SYSTEM_FINGERPRINT
    closed = ConnectionSpec("x", "OpenAI", f"http://127.0.0.1:{free_port()}/v1", key)
    assert advertised_models(closed, timeout_s=2.0) == "unavailable"


def test_cache_is_invalidated_by_model_changes_and_streams_are_restored(  # type: ignore[no-untyped-def]
    exp, own_server, monkeypatch
) -> None:
    monkeypatch.setenv("GENAIOPS_MODEL_PORT", str(own_server.port))
    options = Options(
        flow="support_triage",
        env="local",
        datasets=["support_triage_smoke"],
        concurrency=8,
        reports_dir=exp.reports,
        state_dir=exp.state,
        progress=False,
        start_local=False,
    )
    streams = sys.stdout, sys.stderr

    def run() -> tuple[int, int]:
        result = pipeline.run(options, with_evaluation=False)
        assert (sys.stdout, sys.stderr) == streams  # the very same objects: nothing left swapped
        assert sys.stdout is streams[0] and sys.stderr is streams[1]
        return sum(len(r.lines) for r in result.runs), sum(r.cached_lines for r in result.runs)

    total, cached = run()
    assert total == 4 * 6 and cached == 0
    completions = own_server.app.completions
    assert run() == (total, total)  # nothing changed: every line is a cache hit
    assert own_server.app.completions == completions  # and no model call
    own_server.app.fingerprint = "fp_responder_changed"
    try:
        assert run() == (total, 0)  # the model behind the connection changed: nothing reused
    finally:
        own_server.app.fingerprint = SYSTEM_FINGERPRINT
    monkeypatch.setenv("GENAIOPS_MODEL_PORT", str(exp.services.model_port))
    assert run() == (total, 0)  # another connection target: nothing reused


TRAP_TESTS = """
import concurrent.futures
import os
import sys
from pathlib import Path

from release.engine.base import FlowVariant


def test_a_first_prompt_flow_load_is_under_capsys(capsys):
    import release.engine.promptflow as pf

    assert "promptflow" not in sys.modules  # the first load in this process happens here
    pf.PromptflowEngine(Path(os.environ["TRAP_HOME"]))
    print("loaded")
    assert capsys.readouterr().out == "loaded\\n"


def test_b_later_warnings_do_not_loop(capsys):
    from promptflow._utils.logger_utils import logger

    from release.engine.promptflow import PromptflowEngine

    streams = sys.stdout, sys.stderr
    session = PromptflowEngine(Path(os.environ["TRAP_HOME"])).open(
        Path(os.environ["TRAP_FLOW"]), FlowVariant(), []
    )
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # nodes writing to stderr, as retries do
        outputs = list(pool.map(lambda i: session.run_line({"text": f"t{i}"}, i), range(12)))
    assert [o.outputs["echo"] for o in outputs] == [f"t{i}" for i in range(12)]
    logger.warning("trap-warning-after-the-run")
    assert (sys.stdout, sys.stderr) == streams
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "trap-warning-after-the-run" in shown  # prompt flow's logger writes to this test's streams
    assert "stderr> retrying t3" in shown
"""

TRAP_FLOW = {
    "flow.dag.yaml": """\
inputs:
  text:
    type: string
outputs:
  echo:
    type: string
    reference: ${noisy.output}
nodes:
- name: noisy
  type: python
  source:
    type: code
    path: noisy.py
  inputs:
    text: ${inputs.text}
""",
    "noisy.py": """\
import sys

from promptflow.core import tool


@tool
def noisy(text: str) -> str:
    print(f"retrying {text} after a 429 (Retry-After: 0)", file=sys.stderr)
    return text
""",
}


def test_prompt_flow_loaded_first_under_capsys_does_not_break_later_logging(tmp_path: Path) -> None:
    flow = tmp_path / "noisy_flow"
    flow.mkdir()
    for name, text in TRAP_FLOW.items():
        (flow / name).write_text(text, encoding="utf-8")
    (tmp_path / "test_trap.py").write_text(TRAP_TESTS, encoding="utf-8")
    env = dict(os.environ, TRAP_HOME=str(tmp_path / "pf-home"), TRAP_FLOW=str(flow), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trap.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "2 passed" in output, output
    assert "RecursionError" not in output and "Logging error" not in output, output
