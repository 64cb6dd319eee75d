"""Every command a pipeline or workflow runs is a make target or a `genaiops` command that exists."""

from __future__ import annotations

import argparse
import re
from types import ModuleType
from typing import Any

import pytest

# `echo` only hands a value to the CI service (##vso[task.setvariable], $GITHUB_OUTPUT, summary).
ALLOWED = {"make", "genaiops", "set", "export", "echo"}
# Make targets the pipelines call whose implementation another change brings (issue 11:
# `make integration ENV=dev`, the integration suite against a real environment).


def _all_scripts(
    pm: ModuleType, azure: dict[str, Any], github: dict[str, dict[str, Any]]
) -> list[tuple[str, str]]:
    out = [(f"azure:{n}", s) for n, e in azure.items() for s in pm.step_scripts(e.document)]
    out += [(f"github:{n}", s) for n, w in github.items() for s in pm.step_scripts(w.get("jobs") or {})]
    return out


def test_scripts_only_call_make_or_the_cli(
    pm: ModuleType, azure_pipelines: dict[str, Any], github_workflows: dict[str, Any]
) -> None:
    scripts = _all_scripts(pm, azure_pipelines, github_workflows)
    assert len(scripts) > 20
    for where, script in scripts:
        for command in pm.commands(script):
            assert command.tool in ALLOWED, f"{where}: {command.line!r}: pipelines only call make / genaiops"


def test_make_targets_and_variables_exist(
    pm: ModuleType, azure_pipelines: dict[str, Any], github_workflows: dict[str, Any]
) -> None:
    targets, makefile = pm.make_targets()
    seen = set()
    for where, script in _all_scripts(pm, azure_pipelines, github_workflows):
        for command in pm.commands(script):
            if command.tool == "echo":
                assert "##vso[task.setvariable" in command.line or "$GITHUB_" in command.line, (
                    f"{where}: {command.line!r}: echo only hands values to the CI service"
                )
            if command.tool != "make":
                continue
            names = [a for a in command.args if not a.startswith("-") and "=" not in a]
            assert names, f"{where}: {command.line!r} names no target"
            for target in names:
                assert target in targets, f"{where}: make {target}: no such target in the Makefile"
                seen.add(target)
            for assignment in (a for a in command.args if "=" in a):
                var = assignment.split("=", 1)[0]
                assert re.search(rf"\$\({var}\)|^{var}\s*\?=", makefile, re.M), (
                    f"{where}: {var} is unused by make"
                )
    assert {
        "lint",
        "test",
        "synth",
        "scan",
        "plan",
        "apply",
        "build",
        "status",
        "rollback",
    } <= seen


def test_cli_commands_exist_and_parse(
    pm: ModuleType,
    azure_pipelines: dict[str, Any],
    github_workflows: dict[str, Any],
    parse_cli: Any,
) -> None:
    calls = [
        (w, c)
        for w, s in _all_scripts(pm, azure_pipelines, github_workflows)
        for c in pm.commands(s)
        if c.tool == "genaiops"
    ]
    assert {c.args[0] for _, c in calls} >= {
        "experiment",
        "evaluate",
        "gate",
        "register",
        "deploy",
        "smoke",
        "flow-changed",
        "promote",
    }
    for where, command in calls:
        try:
            parse_cli(list(command.args))
        except SystemExit as exc:  # argparse's way of saying "no such command or option"
            pytest.fail(f"{where}: {command.line!r} is not a valid genaiops command line ({exc})")


def test_the_check_catches_an_unknown_command(pm: ModuleType, cli_parser: argparse.ArgumentParser) -> None:
    targets, _ = pm.make_targets()
    assert "deploy-everything" not in targets
    (command,) = pm.commands(".venv/bin/genaiops deploy-everything --flow $(FLOW)")
    with pytest.raises(SystemExit):
        cli_parser.parse_args(list(command.args))


DOCS = ("azure-devops.md", "github-actions.md", "runbook.md", "new-flow.md")


def test_docs_name_only_commands_that_exist(pm: ModuleType, cli_parser: argparse.ArgumentParser) -> None:
    targets, _ = pm.make_targets()
    sub = next(a for a in cli_parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = 0
    for doc in DOCS:
        text = (pm.REPO / "docs" / doc).read_text(encoding="utf-8")
        spans = re.findall(r"`([^`\n]+)`", text) + [
            line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
        ]
        for span in spans:
            for tool, word in re.findall(r"(?:^|[\s(])(make|genaiops)\s+([a-z][a-z-]*)", span):
                seen += 1
                known = targets if tool == "make" else set(sub.choices)
                assert word in known, f"docs/{doc}: `{tool} {word}` does not exist"
    assert seen > 20
