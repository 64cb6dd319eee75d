"""The main job and the release CLI on the real local environment.

``genaiops release`` runs for real (experiment, evaluate, gate, register, build of the real flow
image, push to the local registry, blue/green deploy, smoke test, traffic); the CLI tests use
``config/local.yaml`` pointed at the test session's local environment through its ``${VAR}``s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from release.cli import main
from release.config import load_config
from release.release_job import ReleaseJob, open_target

pytestmark = [pytest.mark.docker]
FLOW = "web_classification"


stubs = sys.modules["release_test_stubs"]  # loaded by tests/release/conftest.py


@pytest.fixture(scope="module")
def cli_env(local_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """config/local.yaml resolved to the session's local environment; records in a temp folder."""
    tmp = tmp_path_factory.mktemp("release-job")
    ports = local_env.settings.ports
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENAIOPS_LOCAL_STATE_DIR", str(local_env.state_dir))
        for name in ("registry", "router", "model", "pages"):
            mp.setenv(f"GENAIOPS_{name.upper()}_PORT", str(getattr(ports, name)))
        mp.setenv("GENAIOPS_RELEASES_DIR", str(tmp / "releases"))
        mp.setenv("GENAIOPS_IMAGES_DIR", str(tmp / "images"))
        target = open_target(load_config("local"), FLOW)
        _clean(target, local_env)
        yield tmp
        _clean(target, local_env)


def _clean(target: Any, local_env: Any) -> None:
    local_env.router.set_routes(FLOW, {})
    for info in target.list_deployments():
        target.delete(info.name)


def test_cli_deploy_status_rollback_and_errors(
    cli_env: Path, local_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    images = stubs.build_stub_images(local_env.docker_host)
    assert main(["rollback", "--flow", FLOW, "--env", "local"]) == 2
    assert "no earlier release to roll back to" in capsys.readouterr().err

    assert main(["deploy", "--flow", FLOW, "--env", "local", "--image", images["good"]]) == 0
    assert main(["deploy", "--flow", FLOW, "--env", "local", "--image", images["good"]]) == 0
    out = capsys.readouterr().out
    assert "scoring URL: http://127.0.0.1:" in out

    assert main(["status", "--flow", FLOW, "--env", "local", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[0]
    shares = sorted(d["traffic"] for d in status["deployments"])
    assert shares == [0, 100] and status["traffic_ok"] and status["release_in_progress"] is None
    assert all(d["health"] == "healthy" for d in status["deployments"])
    live = status["live_release"]
    old = next(d["name"] for d in status["deployments"] if d["name"] != live)

    # a broken image fails its smoke test at 0 %: exit 1, traffic untouched
    assert main(["deploy", "--flow", FLOW, "--env", "local", "--image", images["broken"]]) == 1
    assert "smoke test(s) failed" in capsys.readouterr().err
    assert main(["smoke", "--flow", FLOW, "--env", "local"]) == 0

    assert main(["rollback", "--flow", FLOW, "--env", "local"]) == 0
    capsys.readouterr()
    assert main(["status", "--flow", FLOW, "--env", "local", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[0]
    assert status["live_release"] == old
    # the release rolled back from is removed, so the target alone tells the history
    assert {d["name"]: d["traffic"] for d in status["deployments"]} == {old: 100}

    assert main(["deploy", "--flow", "no_such_flow", "--env", "local", "--image", images["good"]]) == 2
    err = capsys.readouterr().err
    assert "config/local.yaml: flows.no_such_flow: no such flow" in err


def test_status_and_rollback_work_from_an_empty_release_folder(
    cli_env: Path, local_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later CI run starts with an empty .genaiops/: the history comes from the target."""
    import shutil

    target = open_target(load_config("local"), FLOW)
    _clean(target, local_env)
    shutil.rmtree(cli_env / "releases", ignore_errors=True)
    images = stubs.build_stub_images(local_env.docker_host)
    assert main(["deploy", "--flow", FLOW, "--env", "local", "--image", images["good"]]) == 0
    first = target.get_traffic()
    assert main(["deploy", "--flow", FLOW, "--env", "local", "--image", images["good"]]) == 0
    second = target.get_traffic()
    [first_name] = first
    [second_name] = [name for name, share in second.items() if share == 100]
    assert first_name != second_name and second == {first_name: 0, second_name: 100}
    capsys.readouterr()

    shutil.rmtree(cli_env / "releases")  # a fresh agent: no local record at all
    assert main(["status", "--flow", FLOW, "--env", "local", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)[0]
    assert status["live_release"] == second_name
    assert not (cli_env / "releases").exists(), "status only reads: it takes no lock and writes nothing"

    assert main(["rollback", "--flow", FLOW, "--env", "local"]) == 0
    assert f"{first_name} serves 100 % of traffic" in capsys.readouterr().out
    assert target.get_traffic() == {first_name: 100}
    assert {d.name for d in target.list_deployments()} == {first_name}

    # nothing earlier than the first release: a second rollback is refused, traffic untouched
    shutil.rmtree(cli_env / "releases", ignore_errors=True)
    assert main(["rollback", "--flow", FLOW, "--env", "local"]) == 2
    assert "no earlier release to roll back to" in capsys.readouterr().err
    assert target.get_traffic() == {first_name: 100}
    _clean(target, local_env)


@pytest.mark.slow
def test_main_job_releases_the_flow_end_to_end(
    cli_env: Path, local_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["release", "--flow", FLOW, "--env", "local", "--reports-dir", str(cli_env / "reports")]) == 0
    out = capsys.readouterr()
    printed = out.out + out.err
    lines = dict(
        line.split(": ", 1) for line in out.out.splitlines() if line.startswith(("scoring URL", "release r"))
    )
    assert lines["scoring URL"] == f"{local_env.router_url}/{FLOW}/score"
    report_path = Path(lines["release report"])
    report = json.loads(report_path.read_text())
    assert report["status"] == "released"
    assert [s["name"] for s in report["steps"]] == list(ReleaseJob.STEPS)
    assert Path(report["evaluation_report"]).is_file()
    assert report["image"].startswith(f"{local_env.registry}/") and "@sha256:" in report["image"]
    assert report["traffic"][report["deployment"]] == 100 and report["scoring_url"] == lines["scoring URL"]
    for step in ReleaseJob.STEPS:
        assert f"] {step} done in " in printed

    answer = requests.post(
        report["scoring_url"],
        json={"url": f"{local_env.pages_url}/pages/python-language.html"},
        timeout=60,
    )
    assert answer.status_code == 200 and {"category", "evidence"} <= set(answer.json())

    # the connection key reaches the container at start-up, and nowhere else
    secret = local_env.model_api_key
    client = docker.DockerClient(base_url=local_env.docker_host)
    image = client.images.get(report["image"])
    assert secret not in json.dumps(image.attrs) and secret not in json.dumps(image.history())
    assert secret not in printed and secret not in report_path.read_text()
    for record in (cli_env / "releases").rglob("*.json"):
        assert secret not in record.read_text()
    target = open_target(load_config("local"), FLOW)
    container = client.containers.get(target.container_name(report["deployment"]))  # type: ignore[attr-defined]
    assert any(e.endswith(f"_API_KEY={secret}") for e in container.attrs["Config"]["Env"])
    assert secret not in json.dumps(container.labels)
