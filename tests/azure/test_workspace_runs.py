"""Experiment runs in the Azure ML workspace, at the HTTP boundary.

azure-ai-ml uploads the flow code with its own storage client (no transport seam), so here the
socket layer of ``requests`` itself answers: every request the SDKs send (ARM, data plane,
Blob storage) reaches the fake through the real azure-core / requests stack.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests.adapters
import yaml

from release.azure.clients import AzureContext
from release.config import REPO_ROOT, EnvironmentConfig
from release.engine import get_engine
from release.engine.azure_runs import OUTPUT_FILE, WorkspaceRuns, job_name, output_prefix
from release.engine.base import FlowVariant
from release.errors import CheckFailed
from release.experiment.plan import Job
from release.experiment.runner import Runner
from tests.azure.conftest import WS_PATH
from tests.azure.fake_arm import TOKEN, FakeAzure, StaticCredential, _Adapter

ACCOUNT_HOST = "gaopsdevsta934f.blob.core.windows.net"
CONTAINER = "azureml-blobstore-1234"
JOBS_API = "2024-01-01-preview"
CANARY = "canary-secret-2b9e71c4-do-not-leak"
FLOW = "web_classification"


@pytest.fixture
def wire(fake: FakeAzure, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    adapter = _Adapter(fake)
    monkeypatch.setattr(
        requests.adapters.HTTPAdapter, "send", lambda self, request, **kw: adapter.send(request, **kw)
    )
    fake.store[WS_PATH.lower()]["properties"]["workspaceId"] = "44444444-4444-4444-4444-444444444444"
    fake.put_resource(
        f"{WS_PATH}/datastores/workspaceblobstore",
        {
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": ACCOUNT_HOST.split(".")[0],
                "containerName": CONTAINER,
                "endpoint": "core.windows.net",
                "protocol": "https",
                "credentials": {"credentialsType": "None"},
                "isDefault": True,
            }
        },
    )
    yield fake


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    engine = get_engine(tmp_path_factory.mktemp("pf-home"))
    return Runner(engine, [], tmp_path_factory.mktemp("cache"), connection_overrides={"local_openai": "aoai"})


@pytest.fixture
def runs(dev_config: EnvironmentConfig, wire: FakeAzure) -> WorkspaceRuns:
    ctx = AzureContext.from_config(dev_config, credential=StaticCredential())  # default transport
    return WorkspaceRuns(dev_config, ctx, timeout_s=5, poll_interval_s=0.05)


def a_job() -> Job:
    return Job(
        kind="run",
        name="summarize_text_content=variant_1-full",
        flow_dir=REPO_ROOT / "flows" / FLOW,
        variant=FlowVariant({"summarize_text_content": "variant_1"}, {"classify_with_llm.temperature": 2.0}),
        dataset="full",
        inputs=[{"url": "https://example.org/a"}, {"url": "https://example.org/b"}],
        indices=[3, 7],
        key="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )


def set_status(fake: FakeAzure, name: str, status: str) -> None:
    fake.store[f"{WS_PATH}/jobs/{name}".lower()]["properties"]["status"] = status


def test_job_submitted_once_with_the_variant_applied(
    runs: WorkspaceRuns,
    runner: Runner,
    wire: FakeAzure,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs log requests at DEBUG
    monkeypatch.setenv("AOAI_API_KEY", CANARY)
    job = a_job()
    name = runs.submit(FLOW, job, runner)
    assert name == job_name(FLOW, job)

    # rows uploaded with the identity to a content-addressed path
    rows = [k for k in wire.blobs if k.endswith("/data.jsonl")]
    assert len(rows) == 1 and rows[0].startswith(f"{ACCOUNT_HOST}/{CONTAINER}/genaiops/runs/{FLOW}/")
    assert wire.blobs[rows[0]] == b'{"url": "https://example.org/a"}\n{"url": "https://example.org/b"}\n'

    # the uploaded flow is the resolved one: variant_1 and the hyperparameter, no node_variants
    [dag_key] = [k for k in wire.blobs if k.endswith("/flow.dag.yaml") and "/evaluation/" not in k]
    dag = yaml.safe_load(wire.blobs[dag_key])
    assert "node_variants" not in dag
    nodes = {n["name"]: n for n in dag["nodes"]}
    assert nodes["summarize_text_content"]["source"]["path"] == "summarize_text_content__variant_1.jinja2"
    assert nodes["classify_with_llm"]["inputs"]["temperature"] == 2.0
    assert nodes["classify_with_llm"]["inputs"]["connection"] == "aoai"  # the workspace connection

    [component] = wire.find("PUT", r"/components/[^/]+/versions/[^/]+$")
    assert component.body["properties"]["componentSpec"]["type"] == "promptflow_parallel"

    [put] = wire.find("PUT", rf"/jobs/{name}$")
    assert put.path == f"{WS_PATH}/jobs/{name}" and put.api_version == JOBS_API
    assert put.headers["Authorization"] == f"Bearer {TOKEN}"
    props = put.body["properties"]
    assert props["jobType"] == "Pipeline"
    assert props["settings"]["default_compute"].endswith("/computes/cpu-cluster")
    assert props["tags"]["genaiops.key"] == job.key
    node = props["jobs"]["node"]
    assert node["type"] == "parallel"
    assert node["inputs"]["url"]["value"] == "${data.url}"
    assert node["mini_batch_error_threshold"] == -1
    assert props["inputs"]["data"]["uri"].endswith("/data.jsonl")
    assert props["outputs"]["flow_outputs"]["uri"] == (
        f"azureml://datastores/workspaceblobstore/paths/{output_prefix(FLOW, name)}/"
    )

    # a re-run after an interruption finds the job and submits nothing
    writes = len(wire.writes())
    assert runs.submit(FLOW, job, runner) == name
    assert len(wire.writes()) == writes
    assert CANARY not in wire.all_text()
    assert "submitted workspace job" in caplog.text and CANARY not in caplog.text
    assert not any(CANARY.encode() in blob for blob in wire.blobs.values())


def test_results_come_back_as_lines(runs: WorkspaceRuns, runner: Runner, wire: FakeAzure) -> None:
    job = a_job()
    plan = types.SimpleNamespace(flow_name=FLOW, runs=[job])
    name = runs.submit(FLOW, job, runner)
    set_status(wire, name, "Completed")
    output = f"{ACCOUNT_HOST}/{CONTAINER}/{output_prefix(FLOW, name)}/{OUTPUT_FILE}"
    # prompt flow writes outputs.jsonl with ensure_ascii=False: a raw U+2028 is inside a record
    wire.blobs[output] = '{"line_number": 1, "category": "Academic", "evidence": "Both\u2028"}\n'.encode()

    [result] = runs.run_jobs(plan, runner)  # type: ignore[arg-type]
    first, second = result.lines
    assert (first.index, first.outputs) == (3, None)
    assert "no result" in (first.error or "")
    assert (second.index, second.outputs, second.error) == (
        7,
        {"category": "Academic", "evidence": "Both\u2028"},
        None,
    )


def test_failed_job_fails_every_line_and_waits_are_bounded(
    runs: WorkspaceRuns, runner: Runner, wire: FakeAzure
) -> None:
    job = a_job()
    plan = types.SimpleNamespace(flow_name=FLOW, runs=[job])
    name = runs.submit(FLOW, job, runner)
    set_status(wire, name, "Running")
    runs.timeout_s = 0.3
    with pytest.raises(CheckFailed, match="not finished after"):
        runs.wait([name])
    set_status(wire, name, "Failed")
    [result] = runs.run_jobs(plan, runner)  # type: ignore[arg-type]
    assert [line.error for line in result.lines] == [f"workspace job {name} ended Failed"] * 2


def test_unknown_path_is_never_submitted(
    runs: WorkspaceRuns, runner: Runner, wire: FakeAzure, tmp_path: Path
) -> None:
    job = a_job()
    job = Job(**{**job.__dict__, "flow_dir": tmp_path / "no-flow"})
    with pytest.raises(Exception):  # noqa: B017 - the engine names the missing flow file
        runs.submit(FLOW, job, runner)
    assert wire.find("PUT", r"/jobs/") == []
