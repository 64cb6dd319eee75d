"""The CLI works on any repository: installed as a package, run in a folder outside this checkout.

A wheel of this checkout is built and installed (``--no-deps``) into a fresh venv; the
dependencies come from the project's own ``.venv`` through a ``.pth`` line (installing the whole
pinned tree again would take minutes and prove nothing more about our package). Then, in a
temporary folder outside the checkout, ``genaiops init`` writes a project and the installed CLI
runs experiment, evaluate and release there, also with ``--project DIR`` from elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from release.config import LocalPorts, LocalSettings
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port

REPO = Path(__file__).resolve().parents[2]
FLOW = "my_flow"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``genaiops`` script of a fresh venv holding a non-editable install of this checkout."""
    tmp = tmp_path_factory.mktemp("installed")
    wheels = tmp / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        timeout=300,
        cwd=tmp,
    )
    [wheel] = wheels.glob("genaiops-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # the dependencies (not genaiops itself: .pth lines add paths, they do not run the .venv's hooks)
    Path(purelib, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    script = env_dir / "bin" / "genaiops"
    assert script.is_file()
    return script


def cli(script: Path, cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500, check=False
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSettings]:
    """The local model endpoint and page server on free ports (no Docker), stopped at the end."""
    state = tmp_path_factory.mktemp("services")
    settings = LocalSettings(
        state_dir=str(state),
        ports=LocalPorts(registry=free_port(), router=free_port(), model=free_port(), pages=free_port()),
    )
    env = LocalEnvironment(settings, log=lambda line: None)
    env.up(only=["model", "pages"])
    try:
        yield settings
    finally:
        env.down()


@pytest.fixture()
def clean_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENAIOPS_", "PYTHONPATH"))}
    env["PF_HOME_DIRECTORY"] = str(tmp_path / "pf-home")
    yield env


def test_installed_package_runs_outside_the_checkout(
    installed: Path, services: LocalSettings, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    # the package really is the installed copy, not this checkout
    where = cli(
        installed.parent / "python", tmp_path, "-c", "import release; print(release.__file__)", env=clean_env
    )
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout, where.stdout + where.stderr

    project = tmp_path / "team-flows"
    done = cli(installed, tmp_path, "init", str(project), "--flow", FLOW, env=clean_env)
    assert done.returncode == 0, done.stderr
    for path in ("config/local.yaml", "Makefile", ".github/workflows/pr.yml", ".azure-pipelines/pr.yml"):
        assert (project / path).is_file(), path
    assert (project / "flows" / FLOW / "flow.dag.yaml").is_file()
    assert "$(GENAIOPS) experiment --flow $(FLOW)" in (project / "Makefile").read_text()

    env = {
        **clean_env,
        "GENAIOPS_MODEL_PORT": str(services.ports.model),
        "GENAIOPS_PAGES_PORT": str(services.ports.pages),
        "GENAIOPS_LOCAL_STATE_DIR": services.state_dir,
    }
    common = ["--env", "local", "--no-progress", "--no-start", "--dataset", f"{FLOW}_smoke"]
    # from a sub-folder of the project: found like git finds its repository
    run = cli(installed, project / "flows", "experiment", "--flow", FLOW, *common, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert list((project / "reports" / FLOW).rglob("metrics.json")), "reports go into the project"
    # from outside, with --project
    run = cli(
        installed,
        tmp_path,
        "--project",
        str(project),
        "evaluate",
        "--flow",
        FLOW,
        *common,
        "--no-gate",
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list((project / "reports" / FLOW).rglob("report.html"))) >= 1
    assert not (REPO / "reports" / FLOW).exists(), "nothing is written into the toolkit's checkout"

    # a folder that is no project: a clear error, exit 2
    lost = cli(installed, tmp_path, "experiment", "--flow", FLOW, *common, env=env)
    assert lost.returncode == 2 and "config" in lost.stderr


def test_init_refuses_an_existing_project(installed: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    (tmp_path / "config").mkdir()
    done = cli(installed, tmp_path, "init", ".", env=clean_env)
    assert done.returncode == 2 and "already holds config" in done.stderr
    assert not (tmp_path / "flows").exists() and not (tmp_path / "Makefile").exists()


@pytest.mark.docker
@pytest.mark.slow
def test_installed_package_releases_a_new_project(
    installed: Path, local_env: Any, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """The whole main job of an `init` project, by the installed CLI, on the real local environment."""
    project = tmp_path / "team-flows"
    assert (
        cli(installed, tmp_path, "init", str(project), "--flow", "team_router", env=clean_env).returncode == 0
    )
    ports = local_env.settings.ports
    env = {
        **clean_env,
        "GENAIOPS_LOCAL_STATE_DIR": str(local_env.state_dir),
        **{
            f"GENAIOPS_{name.upper()}_PORT": str(getattr(ports, name))
            for name in ("registry", "router", "model", "pages")
        },
    }
    run = cli(installed, project, "release", "--flow", "team_router", "--env", "local", env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    url = next(line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("scoring URL"))
    assert url == f"{local_env.router_url}/team_router/score"
    answer = requests.post(url, json={"text": "How do I change my password in the app?"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["label"] in ("question", "complaint", "praise")
    local_env.router.set_routes("team_router", {})
    client = docker.DockerClient(base_url=local_env.docker_host)
    for container in client.containers.list(all=True, filters={"label": "genaiops.flow=team_router"}):
        container.remove(force=True)
