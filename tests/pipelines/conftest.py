"""Fixtures for the pipeline checks: the model module, the compiled pipelines, the CLI parser."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent


def _load_model() -> ModuleType:
    name = "genaiops_tests_pipeline_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "pipeline_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pm() -> ModuleType:
    return _load_model()


@pytest.fixture(scope="session")
def azure_pipelines(pm: ModuleType) -> dict[str, Any]:
    """pr/dev/prod/nightly compiled with their templates: {name: Expansion}."""
    return {
        name: pm.AzureExpander().expand_pipeline(pm.AZURE_DIR / f"{name}.yml")
        for name in ("pr", "dev", "prod", "nightly")
    }


@pytest.fixture(scope="session")
def github_workflows(pm: ModuleType) -> dict[str, dict[str, Any]]:
    return {p.stem: pm.load_workflow(p) for p in sorted(pm.GITHUB_DIR.glob("*.yml"))}


@pytest.fixture(scope="session")
def cli_parser() -> argparse.ArgumentParser:
    from release.cli import build_parser

    return build_parser()


@pytest.fixture(scope="session")
def parse_cli(cli_parser: argparse.ArgumentParser) -> Any:
    """Parse a `genaiops` argument list the way the CLI does; SystemExit on anything unknown."""

    def parse(args: list[str]) -> argparse.Namespace:
        return cli_parser.parse_args(list(args))

    return parse
