"""Shared fixtures of the release tests: the stub images and a throw-away local target."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from release.targets.local import LocalTarget


def _load_stubs() -> ModuleType:
    path = Path(__file__).parent / "fixtures" / "stub_server" / "stubs.py"
    spec = importlib.util.spec_from_file_location("release_test_stubs", path)
    assert spec and spec.loader
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# tiny test images (healthy, broken, slow) and a bounded load loop; see fixtures/stub_server
stubs = _load_stubs()


@pytest.fixture(scope="session")
def images(local_env: Any) -> dict[str, str]:
    return stubs.build_stub_images(local_env.docker_host)


@pytest.fixture
def image_cli() -> Any:
    """``genaiops build | push | promote`` in-process: argv -> exit code (errors printed)."""
    import argparse

    from release.commands import image_cmd
    from release.errors import UserError

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="genaiops")
        image_cmd.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(list(argv))
        try:
            return int(args.handler(args))
        except UserError as exc:
            print(f"genaiops: error: {exc}")
            return exc.exit_code

    return run


@pytest.fixture
def target(local_env: Any) -> Iterator[LocalTarget]:
    """A local target with its own flow name, so tests never see each other's deployments."""
    flow = f"t_{secrets.token_hex(3)}"
    target = LocalTarget(flow, docker_host=local_env.docker_host, router=local_env.router, scope="test")
    yield target
    local_env.router.set_routes(flow, {})
    for info in target.list_deployments():
        target.delete(info.name)
