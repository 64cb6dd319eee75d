"""``genaiops new-flow NAME``: a new use case, complete and runnable as generated.

Writes ``flows/NAME/`` (the flow, two datasets, ``experiment.yaml`` with ``experiment.dev.yaml``
and ``experiment.prod.yaml`` overlays, an evaluator, a README) from ``templates/``, adds a
``flows.NAME`` entry (deployment, release strategy, smoke tests) to every ``config/<env>.yaml``
and the flow with its path filter to the pipelines (Azure DevOps and GitHub Actions).

Shared files are edited by inserting text, so their comments and layout stay as they are. All
of it is one transaction: after writing, every config file is loaded and validated and every
pipeline file parsed; when anything fails, every file is put back as it was and the flow
folder is removed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from release.config import REPO_ROOT, ConfigError, load_config
from release.errors import UserError

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{2,39}$")
KINDS = ("dag", "flex")
MARKER = "# genaiops new-flow adds flows above this line"
ENDPOINT_NAME_MAX = 32

# Where the pipelines list their flows, and the entry one flow gets there (indented like the marker).
PIPELINE_ENTRIES: dict[str, tuple[str, ...]] = {
    ".azure-pipelines/pr.yml": ("- name: {name}", "  paths: [flows/{name}]", "  dataset: {name}_smoke"),
    ".azure-pipelines/dev.yml": ("- name: {name}", "  paths: [flows/{name}]"),
    ".azure-pipelines/prod.yml": ("- name: {name}", "  paths: [flows/{name}]"),
    ".github/workflows/pr.yml": ("- flow: {name}", "  paths: flows/{name}", "  dataset: {name}_smoke"),
    ".github/workflows/dev.yml": ("- flow: {name}",),
    ".github/workflows/prod.yml": ("- flow: {name}",),
}

SMOKE_TEST = """\
smoke_tests:
  - name: classifies-a-question
    request: {text: "How do I change my password in the app?"}
    expect_keys: [label]
    expect_one_of: {label: [question, complaint, praise]}"""

CONFIG_ENTRIES = {
    "local": """\
{name}:
  path: flows/{name}
  deployment:
    target: local
  release:
    strategy: bluegreen
    steps: [100]
    step_wait_seconds: 2
{smoke}""",
    "azure": """\
{name}:
  path: flows/{name}
  deployment:
    target: managed
    instance_type: Standard_DS3_v2
    instance_count: 1
    auth_mode: aad_token
  release:
    strategy: bluegreen
    steps: [100]
{smoke}""",
    "azure-prod": """\
{name}:
  path: flows/{name}
  deployment:
    # prod serves from the attached AKS cluster (docs/infrastructure.md, Kubernetes and the
    # managed network); Kubernetes endpoints take aml_token or key, not aad_token
    target: kubernetes
    aks_cluster_id: ${{AKS_CLUSTER_ID}}
    instance_count: 2
    auth_mode: aml_token
  release:
    strategy: ab
    steps: [10, 50, 100]
    step_wait_seconds: 300
{smoke}""",
}


@dataclass
class ScaffoldResult:
    written: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- rendering


def validate_name(name: str, root: Path) -> None:
    if not NAME_RE.match(name):
        raise UserError(
            f"new-flow: {name!r} is not a flow name: use 3-40 lowercase letters, digits and _, "
            "starting with a letter (e.g. invoice_routing)"
        )
    if (root / "flows" / name).exists():
        raise UserError(f"flows/{name} already exists; pick another name or remove the folder")


def render(kind: str, name: str, description: str) -> dict[str, str]:
    """Relative path -> text of every file of the new flow folder."""
    if kind not in KINDS:
        raise UserError(f"new-flow: --kind {kind!r}: use one of {list(KINDS)}")
    values = {
        "__FLOW_FILE__": "flow.dag.yaml" if kind == "dag" else "flow.flex.yaml + classifier.py",
        "__FLOW__": name,
        "__KIND__": kind,
        "__DESCRIPTION__": description,
    }
    files: dict[str, str] = {}
    for base in (TEMPLATES / "common", TEMPLATES / kind):
        for source in sorted(p for p in base.rglob("*") if p.is_file()):
            relative = str(source.relative_to(base)).removesuffix(".tmpl")
            text = source.read_text(encoding="utf-8")
            for placeholder, value in values.items():
                text = text.replace(placeholder, value)
            files[relative] = text
    return files


def _indent(block: str, spaces: int) -> str:
    return "\n".join((" " * spaces + line) if line else line for line in block.splitlines())


def config_entry(name: str, env: str, kind: str) -> str:
    key = "local" if kind == "local" else ("azure-prod" if env == "prod" else "azure")
    return CONFIG_ENTRIES[key].format(name=name, smoke=_indent(SMOKE_TEST, 4))


# --------------------------------------------------------------------------- text edits


def insert_flow_config(text: str, entry: str, file: str) -> str:
    """Adds ``entry`` as the last item of the top-level ``flows:`` mapping, keeping everything else."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"^flows:\s*(\{\s*\})?\s*(#.*)?$", line)), None
    )
    if start is None:
        if any(re.match(r"^flows\s*:", line) for line in lines):
            raise UserError(f"{file}: flows: is not a block mapping; add flows.{entry.split(':')[0]} by hand")
        return text.rstrip("\n") + "\n\nflows:\n" + _indent(entry, 2) + "\n"
    lines[start] = "flows:"
    end = len(lines)
    for i in range(start + 1, len(lines)):
        if lines[i] and not lines[i][0].isspace() and not lines[i].startswith("#"):
            end = i
            break
    children = [ln for ln in lines[start + 1 : end] if ln.strip() and not ln.lstrip().startswith("#")]
    indent = len(children[0]) - len(children[0].lstrip()) if children else 2
    insert_at = end
    # blank lines and column-0 comments just above the next key belong to that key
    while insert_at > start + 1 and (
        not lines[insert_at - 1].strip() or lines[insert_at - 1].startswith("#")
    ):
        insert_at -= 1
    new_lines = lines[:insert_at] + _indent(entry, indent).splitlines() + lines[insert_at:]
    return "\n".join(new_lines) + "\n"


def insert_pipeline_entry(text: str, entry: tuple[str, ...], name: str, file: str) -> str:
    """Adds the flow's entry above every marker line of a pipeline file."""
    out: list[str] = []
    inserted = 0
    for line in text.splitlines():
        if line.strip() == MARKER:
            indent = len(line) - len(line.lstrip())
            out.extend(" " * indent + part.format(name=name) for part in entry)
            inserted += 1
        out.append(line)
    if not inserted:
        raise UserError(
            f"{file}: the line '{MARKER}' is missing; put it back below the last flow entry "
            f"(or add {name} to the file by hand)"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the transaction


def new_flow(
    name: str,
    kind: str = "dag",
    description: str | None = None,
    dry_run: bool = False,
    root: Path = REPO_ROOT,
) -> ScaffoldResult:
    validate_name(name, root)
    description = description or f"The {name.replace('_', ' ')} use case."
    files = render(kind, name, description)
    config_dir = root / "config"
    env_files = sorted(config_dir.glob("*.yaml"))
    if not env_files:
        raise UserError(f"{config_dir}: no config/<env>.yaml files to add the flow to")

    edits: dict[Path, str] = {}
    for path in env_files:
        shown = str(path.relative_to(root))
        original = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(original) or {}
        if name in (raw.get("flows") or {}):
            raise UserError(f"{shown}: flows.{name} already exists; pick another name")
        kind = str(raw.get("kind", "local"))
        if kind == "azure":
            _check_endpoint_name(name, path.stem, config_dir, shown)
        entry = config_entry(name, path.stem, kind)
        edits[path] = insert_flow_config(original, entry, shown)
    for relative, entry_lines in PIPELINE_ENTRIES.items():
        path = root / relative
        if path.is_file():
            edits[path] = insert_pipeline_entry(path.read_text(encoding="utf-8"), entry_lines, name, relative)

    flow_dir = root / "flows" / name
    result = ScaffoldResult(
        written=[f"flows/{name}/{rel}" for rel in files],
        edited=[str(p.relative_to(root)) for p in edits],
    )
    if dry_run:
        return result

    originals = {path: path.read_text(encoding="utf-8") for path in edits}
    try:
        for relative, text in files.items():
            target = flow_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        for path, text in edits.items():
            path.write_text(text, encoding="utf-8")
        _validate(name, root, list(edits))
    except BaseException:
        for path, text in originals.items():
            path.write_text(text, encoding="utf-8")
        shutil.rmtree(flow_dir, ignore_errors=True)
        raise
    return result


def _check_endpoint_name(name: str, env: str, config_dir: Path, shown: str) -> None:
    """Azure endpoint and app names are ``<prefix>-<env>-<flow>``, at most 32 characters."""
    prefix = load_config(env, config_dir=config_dir).prefix
    endpoint = f"{prefix}-{env}-{name.replace('_', '-')}"
    if len(endpoint) > ENDPOINT_NAME_MAX:
        raise UserError(
            f"{shown}: the endpoint name {endpoint!r} would be {len(endpoint)} characters (Azure allows "
            f"{ENDPOINT_NAME_MAX}); use a flow name of at most "
            f"{ENDPOINT_NAME_MAX - len(prefix) - len(env) - 2} characters"
        )


def _validate(name: str, root: Path, edited: list[Path]) -> None:
    for path in edited:
        shown = str(path.relative_to(root))
        if path.parent == root / "config":
            try:
                config = load_config(path.stem, config_dir=root / "config")
            except ConfigError as exc:
                raise UserError(f"new-flow: {shown} would be invalid, nothing was changed:\n{exc}") from None
            if name not in config.flows:
                raise UserError(f"new-flow: {shown}: flows.{name} did not land in the flows mapping")
        else:
            try:
                parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise UserError(f"new-flow: {shown} would not parse, nothing was changed: {exc}") from None
            if name not in yaml.safe_dump(parsed):
                raise UserError(f"new-flow: {shown}: the flow entry did not land in the file")
