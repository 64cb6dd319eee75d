"""A small model of Azure Pipelines and GitHub Actions files, enough to check them offline.

Azure Pipelines: expands a pipeline the way Azure DevOps compiles it: ``template:``
references (resolved relative to the including file) in stages, jobs, steps and variables,
declared ``parameters`` (unknown ones and missing required ones are errors, types and
``values`` are checked), ``${{ parameters.x }}``/``${{ each }}``/``${{ if }}`` expressions with
the functions our files use. Runtime macros ``$(...)`` are kept as they are.

GitHub Actions: loads workflows, resolves local reusable workflows (``uses: ./...``) and
checks their ``with:`` against the declared ``workflow_call`` inputs.

Both sides then expose the commands each stage/job runs (``make ...``, ``genaiops ...``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
AZURE_DIR = REPO / ".azure-pipelines"
GITHUB_DIR = REPO / ".github" / "workflows"

_FULL = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.S)
_INLINE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_EACH = re.compile(r"^\s*each\s+(\w+)\s+in\s+(.+)$", re.S)
_IF = re.compile(r"^\s*if\s+(.+)$", re.S)


class TemplateError(Exception):
    """A pipeline or template is wrong; the message names the file and the problem."""


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans as Azure DevOps and GitHub read them: only true/false (`on` is a key)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from None


# --------------------------------------------------------------------------- expressions


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w.\-]*)|(?P<op>[(),\[\]]))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise TemplateError(f"cannot parse expression {expr!r} at {expr[pos:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("", "false", "0")
    return bool(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return "" if value is None else str(value)


_FUNCTIONS: dict[str, Any] = {
    "eq": lambda a, b: _text(a).lower() == _text(b).lower(),
    "ne": lambda a, b: _text(a).lower() != _text(b).lower(),
    "not": lambda a: not _truthy(a),
    "and": lambda *a: all(_truthy(x) for x in a),
    "or": lambda *a: any(_truthy(x) for x in a),
    "join": lambda sep, items: sep.join(_text(i) for i in (items or [])),
    "format": lambda fmt, *a: re.sub(r"\{(\d+)\}", lambda m: _text(a[int(m.group(1))]), fmt),
    "coalesce": lambda *a: next((x for x in a if _text(x) != ""), ""),
}


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate a compile-time expression (``parameters.x``, ``join(',', a)``, ``eq(a, b)``)."""
    tokens = _tokens(expr)
    value, pos = _parse(tokens, 0, context, expr)
    if pos != len(tokens):
        raise TemplateError(f"unexpected {tokens[pos][1]!r} in expression {expr!r}")
    return value


def _parse(tokens: list[tuple[str, str]], pos: int, context: dict[str, Any], expr: str) -> tuple[Any, int]:
    if pos >= len(tokens):
        raise TemplateError(f"incomplete expression {expr!r}")
    kind, text = tokens[pos]
    if kind == "str":
        return text[1:-1].replace("''", "'"), pos + 1
    if kind == "num":
        return (float(text) if "." in text else int(text)), pos + 1
    if kind != "name":
        raise TemplateError(f"unexpected {text!r} in expression {expr!r}")
    if pos + 1 < len(tokens) and tokens[pos + 1] == ("op", "("):
        if text not in _FUNCTIONS:
            raise TemplateError(f"unknown function {text}() in {expr!r}")
        args: list[Any] = []
        pos += 2
        while tokens[pos] != ("op", ")"):
            arg, pos = _parse(tokens, pos, context, expr)
            args.append(arg)
            if tokens[pos] == ("op", ","):
                pos += 1
        return _FUNCTIONS[text](*args), pos + 1
    if text in ("true", "false"):
        return text == "true", pos + 1
    return _lookup(text, context, expr), pos + 1


def _lookup(dotted: str, context: dict[str, Any], expr: str) -> Any:
    parts = dotted.split(".")
    if parts[0] not in context:
        raise TemplateError(f"{expr.strip()!r}: {parts[0]!r} is not defined here")
    value = context[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif i == 1 and parts[0] == "parameters":
            raise TemplateError(f"{expr.strip()!r}: parameters has no {part!r} (not a declared parameter)")
        else:
            return None  # Azure: a missing property of an object is null
    return value


def substitute_text(text: str, context: dict[str, Any]) -> Any:
    full = _FULL.match(text)
    if full and "${{" not in full.group(1):
        return evaluate(full.group(1), context)
    return _INLINE.sub(lambda m: _text(evaluate(m.group(1), context)), text)


# --------------------------------------------------------------------------- azure expansion


@dataclass
class Expansion:
    """The compiled pipeline plus every template file it used."""

    document: dict[str, Any]
    templates: set[Path] = field(default_factory=set)


_TYPES = {"string", "number", "boolean", "object", "step", "stepList", "job", "jobList", "stage", "stageList"}


def resolve_parameters(declared: Any, passed: dict[str, Any], where: str) -> dict[str, Any]:
    """Azure's parameter binding: unknown names and missing required ones are errors."""
    if declared is None:
        declared = []
    if not isinstance(declared, list):
        raise TemplateError(f"{where}: parameters must be a list of {{name, type, default}}")
    names = {}
    for item in declared:
        if not isinstance(item, dict) or "name" not in item:
            raise TemplateError(f"{where}: every parameter needs a name: {item!r}")
        ptype = item.get("type", "string")
        if ptype not in _TYPES:
            raise TemplateError(f"{where}: parameter {item['name']}: unknown type {ptype!r}")
        names[item["name"]] = item
    unknown = sorted(set(passed) - set(names))
    if unknown:
        raise TemplateError(f"{where}: receives parameters it does not declare: {unknown}")
    values: dict[str, Any] = {}
    for name, item in names.items():
        if name in passed:
            value = passed[name]
        elif "default" in item:
            value = item["default"]
        else:
            raise TemplateError(f"{where}: required parameter {name!r} (no default) was not given")
        ptype = item.get("type", "string")
        if ptype == "boolean":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise TemplateError(f"{where}: parameter {name!r} must be a boolean, got {value!r}")
        elif ptype == "number" and not isinstance(value, (int, float)):
            raise TemplateError(f"{where}: parameter {name!r} must be a number, got {value!r}")
        elif ptype == "string" and isinstance(value, (dict, list)):
            raise TemplateError(f"{where}: parameter {name!r} must be a string, got {value!r}")
        if "values" in item and value not in item["values"]:
            raise TemplateError(f"{where}: parameter {name!r}={value!r} is not one of {item['values']}")
        values[name] = value
    return values


class AzureExpander:
    """Compiles one Azure Pipelines file with its templates."""

    SECTIONS = ("stages", "jobs", "steps", "variables")

    def __init__(self) -> None:
        self.templates: set[Path] = set()

    def expand_pipeline(self, path: Path) -> Expansion:
        document = load_yaml(path)
        if not isinstance(document, dict):
            raise TemplateError(f"{path}: a pipeline is a mapping")
        params = resolve_parameters(document.get("parameters"), {}, str(path))
        context = {"parameters": params, "__file__": path}
        body = {k: v for k, v in document.items() if k != "parameters"}
        expanded = self._value(body, context)
        return Expansion(expanded, set(self.templates))

    def _template(self, ref: dict[str, Any], context: dict[str, Any]) -> list[Any]:
        here: Path = context["__file__"]
        name = self._value(ref["template"], context)
        if "@" in str(name):
            raise TemplateError(f"{here}: template {name!r} from another repository is not allowed here")
        path = (here.parent / str(name)).resolve()
        if not path.is_file():
            raise TemplateError(f"{here}: template {name!r} does not exist ({path})")
        extra = sorted(set(ref) - {"template", "parameters"})
        if extra:
            raise TemplateError(f"{here}: template reference {name!r} has unknown keys {extra}")
        self.templates.add(path)
        passed = self._value(ref.get("parameters") or {}, context)
        document = load_yaml(path)
        if not isinstance(document, dict):
            raise TemplateError(f"{path}: a template is a mapping")
        sections = [s for s in self.SECTIONS if s in document]
        if len(sections) != 1:
            raise TemplateError(f"{path}: a template defines exactly one of {self.SECTIONS}")
        params = resolve_parameters(document.get("parameters"), passed, f"{path} (from {here})")
        inner = {"parameters": params, "__file__": path}
        result = self._value(document[sections[0]], inner)
        if not isinstance(result, list):
            raise TemplateError(f"{path}: {sections[0]} must be a list")
        return result

    def _value(self, node: Any, context: dict[str, Any]) -> Any:
        if isinstance(node, str):
            return substitute_text(node, context)
        if isinstance(node, list):
            return self._list(node, context)
        if isinstance(node, dict):
            return self._mapping(node, context)
        return node

    def _directive(self, key: Any) -> tuple[str, Any] | None:
        if not isinstance(key, str):
            return None
        full = _FULL.match(key)
        if not full:
            return None
        body = full.group(1)
        each = _EACH.match(body)
        if each:
            return "each", (each.group(1), each.group(2))
        cond = _IF.match(body)
        if cond:
            return "if", cond.group(1)
        return "expr", body

    def _list(self, items: list[Any], context: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if isinstance(item, dict) and len(item) == 1:
                key, inner = next(iter(item.items()))
                directive = self._directive(key)
                if directive and directive[0] == "each":
                    var, source = directive[1]
                    for element in evaluate(source, context) or []:
                        out.extend(self._list(inner or [], {**context, var: element}))
                    continue
                if directive and directive[0] == "if":
                    if _truthy(evaluate(directive[1], context)):
                        out.extend(self._list(inner or [], context))
                    continue
            if isinstance(item, dict) and "template" in item:
                out.extend(self._template(item, context))
                continue
            out.append(self._value(item, context))
        return out

    def _mapping(self, node: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            directive = self._directive(key)
            if directive and directive[0] == "each":
                var, source = directive[1]
                for element in evaluate(source, context) or []:
                    out.update(self._mapping(value or {}, {**context, var: element}))
                continue
            if directive and directive[0] == "if":
                if _truthy(evaluate(directive[1], context)):
                    out.update(self._mapping(value or {}, context))
                continue
            new_key = substitute_text(key, context) if isinstance(key, str) else key
            out[_text(new_key) if not isinstance(new_key, str) else new_key] = self._value(value, context)
        return out


# --------------------------------------------------------------------------- azure analysis


def stage_names(document: dict[str, Any]) -> list[str]:
    return [s["stage"] for s in document.get("stages", [])]


def stage_dependencies(document: dict[str, Any]) -> dict[str, set[str]]:
    """Direct dependencies per stage (Azure: no dependsOn means 'the previous stage')."""
    deps: dict[str, set[str]] = {}
    previous: str | None = None
    for stage in document.get("stages", []):
        if "dependsOn" not in stage:
            deps[stage["stage"]] = {previous} if previous else set()
        else:
            value = stage["dependsOn"]
            deps[stage["stage"]] = {value} if isinstance(value, str) else set(value or [])
        previous = stage["stage"]
    return deps


def transitive(deps: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps.get(start, set()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(deps.get(name, set()))
    return seen


def step_scripts(node: Any) -> list[str]:
    """Every script text under ``node`` (script/bash steps and AzureCLI inline scripts)."""
    out: list[str] = []
    if isinstance(node, dict):
        for key in ("script", "bash", "run"):
            if isinstance(node.get(key), str):
                out.append(node[key])
        inputs = node.get("inputs")
        if isinstance(inputs, dict) and isinstance(inputs.get("inlineScript"), str):
            out.append(inputs["inlineScript"])
        for value in node.values():
            if isinstance(value, (dict, list)):
                out.extend(step_scripts(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(step_scripts(item))
    return out


def steps_of(node: Any) -> list[dict[str, Any]]:
    """Every step mapping under ``node`` (anything in a ``steps:`` list)."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "steps" and isinstance(value, list):
                out.extend(v for v in value if isinstance(v, dict))
            elif isinstance(value, (dict, list)):
                out.extend(steps_of(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(steps_of(item))
    return out


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    tool: str  # "make" | "genaiops" | other program name
    args: tuple[str, ...]
    line: str


_MACRO = re.compile(r"\$\([^)]*\)|\$\{\{.*?\}\}")
ENV_GLUE = ("set", "export", "#")


def commands(script: str) -> list[Command]:
    """Split a script into the commands it runs (one per line or ``&&``/``;`` part)."""
    out: list[Command] = []
    joined = re.sub(r"\\\n\s*", " ", script)
    for raw_line in joined.splitlines():
        for part in re.split(r"&&|;", raw_line):
            line = part.strip()
            if not line:
                continue
            placeholder = _MACRO.sub("VALUE", line)
            try:
                tokens = shlex.split(placeholder, comments=True)
            except ValueError as exc:
                raise TemplateError(f"cannot parse shell line {line!r}: {exc}") from None
            if not tokens:
                continue
            program = tokens[0]
            tool = "genaiops" if program.endswith("genaiops") else Path(program).name
            out.append(Command(tool, tuple(tokens[1:]), line))
    return out


def make_targets(makefile: Path = REPO / "Makefile") -> tuple[set[str], str]:
    text = makefile.read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z][\w-]*)\s*:(?!=)", text, re.M))
    return targets, text


# --------------------------------------------------------------------------- github


def load_workflow(path: Path) -> dict[str, Any]:
    document = load_yaml(path)
    if not isinstance(document, dict):
        raise TemplateError(f"{path}: a workflow is a mapping")
    return document


def reusable_inputs(document: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    trigger = document.get("on")
    if isinstance(trigger, dict) and "workflow_call" in trigger:
        call = trigger["workflow_call"] or {}
        return dict(call.get("inputs") or {})
    return None


def check_reusable_call(job_name: str, job: dict[str, Any], caller: Path) -> Path | None:
    """Checks a ``uses: ./...`` job against the called workflow's inputs; returns its path."""
    uses = job.get("uses")
    if not isinstance(uses, str):
        return None
    if not uses.startswith("./"):
        raise TemplateError(f"{caller}: job {job_name}: reusable workflow {uses!r} must be local (./...)")
    path = REPO / uses[2:]
    if not path.is_file():
        raise TemplateError(f"{caller}: job {job_name}: {uses} does not exist")
    inputs = reusable_inputs(load_workflow(path))
    if inputs is None:
        raise TemplateError(f"{caller}: job {job_name}: {uses} has no workflow_call trigger")
    given = dict(job.get("with") or {})
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise TemplateError(f"{caller}: job {job_name}: passes inputs {uses} does not declare: {unknown}")
    missing = sorted(n for n, spec in inputs.items() if (spec or {}).get("required") and n not in given)
    if missing:
        raise TemplateError(f"{caller}: job {job_name}: does not pass required inputs of {uses}: {missing}")
    return path


def job_needs(document: dict[str, Any]) -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    for name, job in (document.get("jobs") or {}).items():
        needs = job.get("needs", [])
        deps[name] = {needs} if isinstance(needs, str) else set(needs)
    return deps


def job_scripts(job: dict[str, Any]) -> list[str]:
    """The run: scripts of a job, following a local reusable workflow."""
    uses = job.get("uses")
    if isinstance(uses, str) and uses.startswith("./"):
        called = load_workflow(REPO / uses[2:])
        return [s for j in (called.get("jobs") or {}).values() for s in job_scripts(j)]
    return step_scripts(job.get("steps") or [])


# --------------------------------------------------------------------------- release order

GATES = {("make", "evaluate"), ("genaiops", "gate"), ("genaiops", "evaluate")}
DEPLOYS = {("make", "release"), ("genaiops", "release"), ("genaiops", "deploy")}
PROMOTES = {("make", "promote"), ("genaiops", "promote")}


def kinds(scripts: list[str]) -> set[tuple[str, str]]:
    out = set()
    for script in scripts:
        for command in commands(script):
            target = next((a for a in command.args if not a.startswith("-") and "=" not in a), "")
            out.add((command.tool, target))
    return out


def ungated(units: dict[str, list[str]], deps: dict[str, set[str]]) -> list[str]:
    """Units (stages or jobs) that deploy or promote without depending on one that gates."""
    gates = {name for name, scripts in units.items() if kinds(scripts) & GATES}
    bad = []
    for name, scripts in units.items():
        if kinds(scripts) & (DEPLOYS | PROMOTES) and not (transitive(deps, name) & gates):
            bad.append(name)
    return bad


def azure_units(document: dict[str, Any]) -> dict[str, list[str]]:
    return {stage["stage"]: step_scripts(stage) for stage in document.get("stages", [])}


def github_units(document: dict[str, Any]) -> dict[str, list[str]]:
    return {name: job_scripts(job) for name, job in (document.get("jobs") or {}).items()}


# --------------------------------------------------------------------------- github permissions

PERMISSION_LEVELS = {"none": 0, "read": 1, "write": 2}
# GitHub's "restricted" default for GITHUB_TOKEN when a workflow sets no `permissions`.
RESTRICTED_DEFAULT = {"contents": "read", "packages": "read", "metadata": "read"}


def _level(permissions: Any, scope: str) -> int:
    if permissions == "write-all":
        return 2
    if permissions == "read-all":
        return 1
    if not isinstance(permissions, dict):
        return 0
    return PERMISSION_LEVELS.get(str(permissions.get(scope, "none")), 0)


def permission_violations(caller: Path, workflow: dict[str, Any]) -> list[str]:
    """Reusable-workflow jobs asking for more than their caller grants (GitHub then rejects the file).

    GitHub: the permissions of a called workflow's jobs can only be the same or lower than the
    caller's ("The nested job 'image' is requesting 'actions: read', but is only allowed
    'actions: none'"); https://docs.github.com/actions/using-workflows/reusing-workflows
    """
    problems = []
    for name, job in (workflow.get("jobs") or {}).items():
        uses = job.get("uses")
        if not (isinstance(uses, str) and uses.startswith("./")):
            continue
        granted = job.get("permissions", workflow.get("permissions", RESTRICTED_DEFAULT))
        called = load_workflow(REPO / uses[2:])
        for inner, spec in (called.get("jobs") or {}).items():
            asked = spec.get("permissions", called.get("permissions"))
            if asked is None:
                continue
            scopes = asked.keys() if isinstance(asked, dict) else PERMISSION_SCOPES
            for scope in scopes:
                if _level(asked, scope) > _level(granted, scope):
                    allowed = {v: k for k, v in PERMISSION_LEVELS.items()}[_level(granted, scope)]
                    problems.append(
                        f"{caller.name}: job '{name}' -> {uses}: nested job '{inner}' is requesting "
                        f"'{scope}: {asked[scope] if isinstance(asked, dict) else asked}', "
                        f"but is only allowed '{scope}: {allowed}'"
                    )
    return problems


PERMISSION_SCOPES = (
    "actions", "attestations", "checks", "contents", "deployments", "id-token", "issues",
    "discussions", "packages", "pages", "pull-requests", "repository-projects",
    "security-events", "statuses",
)  # fmt: skip
