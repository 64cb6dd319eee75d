"""Pipeline rehearsal: run a compiled pipeline's steps in order, the way a hosted agent would.

What is real:
- Each pipeline is compiled by ``pipeline_model`` (templates, parameters, ``${{ }}``), then its
  jobs run in dependency order. Every job starts in a FRESH CLONE of a throw-away origin
  repository holding the working tree (branches ``development``/``main`` at the base commit, a
  ``feature`` branch with a change to one flow), with an empty HOME, as a NON-ROOT user (uid
  65534 when the tests run as root), with a PATH holding only the programs the ubuntu-24.04
  image documents (``hosted_image.py``) plus what earlier steps installed.
- Runtime expressions: Azure ``$(macros)``, ``##vso[task.setvariable]``, step conditions;
  GitHub ``${{ }}`` with inputs/matrix/steps outputs/github/vars/secrets contexts,
  ``$GITHUB_OUTPUT``, ``if:``; id-token permission gives ``ACTIONS_ID_TOKEN_REQUEST_*``.
- Tasks/actions are modelled by what they do: TerraformInstaller@1 / hashicorp/setup-terraform
  put a terraform (the ``shims/terraform`` stand-in) of the requested version on PATH;
  AzureCLI@2 / azure/login open an ``az`` session (``shims/az``) with the variables the real
  task sets; Publish/Download Pipeline Artifact and upload/download-artifact copy folders the
  way the services do (``.artifactignore``, hidden files, ``!`` exclusions; file modes are
  lost); ManualValidation@1 must run in an agentless job. An unknown task or action fails.
- Cheap commands run for real: ``make install`` (see below), ``genaiops flow-changed``, the
  Terraform half of ``make plan`` (preflight, init, plan, show, plan encryption: see below),
  ``make apply`` (decrypt, terraform init, apply), the shell glue.

What is NOT real (stated, and listed in :attr:`Run.dry_runs`):
- ``make install``: the pip install is replaced by a venv that links the test run's installed
  packages (created when the step runs, so nothing exists before it); ``make install`` itself
  then runs and finds nothing to do.
- ``make plan``: ``make -n plan`` plus ``rehearsal_plan.py``, which copies the stack synthesized
  once per test session (real CDKTF synth, :meth:`Machine.synthesize`) and runs
  ``infra.terraform.preflight/plan`` as ``genaiops plan`` does; synth per job (tens of seconds)
  and the checkov scan (tests/infra) are not repeated.
- Heavy or Azure-calling commands run as a dry run: ``make <target>`` as ``make -n <target>``
  (the recipe's programs must exist), ``genaiops <cmd> ...`` only checks that the executable
  exists; the caller also parses every such line with the real CLI parser
  (test_commands.py). So no step reaches Azure, and the fake ARM server is not needed here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
REPO = _HERE.parents[1]
NOBODY = 65534
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
# The agent's Python: a system interpreter the non-root user can run (the test run's own one
# may live under a private home, e.g. pyenv in /root). Same minor version as the test venv.
_SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
AGENT_PYTHON = str(_SYSTEM_PYTHON) if _SYSTEM_PYTHON.is_file() else sys.executable
STEP_TIMEOUT_S = 300

# Commands that run as a dry run (see the module docstring).
DRY_MAKE = {
    "lint", "test", "synth", "scan", "build", "push", "status", "rollback", "promote",
    "release", "experiment", "evaluate", "gate", "integration",
}  # fmt: skip
DRY_GENAIOPS = {
    "experiment", "evaluate", "gate", "register", "build", "push", "deploy", "smoke",
    "promote", "release", "status", "rollback",
}  # fmt: skip
# Make targets another change of issue 11 brings (`make integration`): skipped while missing.
BUILTINS = {"set", "export", "echo", "test", "cd", ":", "[", "true", "false", "printf", "for", "if"}

# Variable group / environment values (fake, non-secret) and secrets (canaries).
PLAN_KEY = "rehearsal-plan-key-0123456789-abcdefghijklmnop"
AOAI_KEY = "rehearsal-aoai-key-CANARY-7f3e"
STATE_SECRET = "rehearsal-storage-key-CANARY-91c2"
GROUP_VARS = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-0000000000aa",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-0000000000bb",
    "AZURE_LOCATION": "westeurope",
    "DEPLOYER_OBJECT_ID": "00000000-0000-0000-0000-0000000000cc",
    "TFSTATE_RESOURCE_GROUP": "rehearsal-tfstate-rg",
    "TFSTATE_STORAGE_ACCOUNT": "rehearsaltfstate",
    "AOAI_ENDPOINT": "https://rehearsal.openai.azure.com/",
    "AKS_CLUSTER_ID": "/subscriptions/x/resourceGroups/aks/providers/Microsoft.ContainerService/managedClusters/aks",
    "RELEASE_APPROVERS": "release-managers@example.com",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-0000000000dd",
    "NIGHTLY_INTEGRATION": "true",
    "GENAIOPS_NAME_PREFIX": "rehearsal",
    "PROD_DEPLOYER_OBJECT_ID": "00000000-0000-0000-0000-0000000000ee",
    "AOAI_RESOURCE_ID": "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/ai/providers/Microsoft.CognitiveServices/accounts/rehearsal-aoai",
    "AOAI_DEPLOYMENT": "gpt-4o-mini",
    "AGENT_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRehearsalOnlyKeyNotReal rehearsal",
}
SECRETS = {"AOAI_API_KEY": AOAI_KEY, "GENAIOPS_PLAN_KEY": PLAN_KEY}
# self-hosted pools the pipelines may name: the agent pools of the configs' private profiles
SELF_HOSTED_POOLS = {"genaiops-prod-agents"}
SERVICE_CONNECTIONS = {"genaiops-dev", "genaiops-prod"}


class RehearsalError(AssertionError):
    """A step failed or broke a hosted-agent rule; the message names pipeline, job and step."""


# --------------------------------------------------------------------------- the origin repo


@dataclass
class Origin:
    path: Path
    base: str  # sha of development/main
    feature: str  # sha of the PR branch (base + a change in flows/<touched_flow>)
    touched_flow: str


def make_origin(root: Path, touched_flow: str = "web_classification") -> Origin:
    """A git repository holding the working tree (tracked and new files, not ignored ones)."""
    origin = root / "origin"
    origin.mkdir()
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            dst = origin / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = _git_env()
    git = ["git", "-C", str(origin)]
    subprocess.run([*git, "init", "-q", "-b", "development"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "base"], check=True, env=env)
    base = _rev(origin, "HEAD")
    subprocess.run([*git, "branch", "main"], check=True, env=env)
    subprocess.run([*git, "checkout", "-q", "-b", "feature"], check=True, env=env)
    (origin / "flows" / touched_flow / "REHEARSAL_CHANGE.md").write_text("a change in a PR\n")
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", "change one flow"], check=True, env=env)
    feature = _rev(origin, "HEAD")
    subprocess.run([*git, "checkout", "-q", "development"], check=True, env=env)
    _give_away(origin)
    return Origin(origin, base, feature, touched_flow)


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": "rehearsal",
        "GIT_AUTHOR_EMAIL": "rehearsal@example.com",
        "GIT_COMMITTER_NAME": "rehearsal",
        "GIT_COMMITTER_EMAIL": "rehearsal@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def _rev(repo: Path, ref: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(repo), "rev-parse", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _as_user(command: list[str]) -> list[str]:
    """``command`` run as the non-root agent user (uid 65534) when the tests run as root."""
    if os.geteuid() != 0:
        return command
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]


def _give_away(path: Path) -> None:
    """Hand ``path`` to the non-root user (when the tests run as root)."""
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, NOBODY, NOBODY)
        for name in filenames + dirnames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


# --------------------------------------------------------------------------- the machine


@dataclass
class Machine:
    """What every job of a rehearsal shares: the image's programs, the shims, the backend."""

    root: Path
    origin: Origin
    image_bin: Path
    backend: Path
    log: Path
    artifacts: Path  # <run>/<artifact name>/...
    presynth: Path | None = None  # <env>/cdk.tf.json synthesized once (see rehearsal_plan.py)

    @classmethod
    def create(cls, root: Path, origin: Origin, image_tools: set[str]) -> Machine:
        image_bin = root / "image-bin"
        image_bin.mkdir()
        for tool in sorted(image_tools):
            if tool == "az":
                _install_shim("az", image_bin / "az")
                continue
            found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            if found:
                (image_bin / tool).symlink_to(found)
        node = shutil.which("node")
        if node and not (image_bin / "node").exists():  # Node.js 22 on the image (jsii needs it)
            (image_bin / "node").symlink_to(node)
        backend = root / "backend"
        backend.mkdir()
        log = root / "calls.jsonl"
        log.touch()
        log.chmod(0o666)
        artifacts = root / "artifacts"
        artifacts.mkdir()
        machine = cls(root, origin, image_bin, backend, log, artifacts)
        _give_away(backend)
        return machine

    def synthesize(self, envs: list[str]) -> None:
        """Synthesize each environment's stack once (real CDKTF synth) for every `make plan`."""
        from infra.app import synth
        from release.config import load_config

        saved = {k: os.environ.get(k) for k in GROUP_VARS}
        os.environ.update(GROUP_VARS)
        try:
            self.presynth = self.root / "presynth"
            synth([load_config(env) for env in envs], outdir=self.presynth)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        _give_away(self.presynth)
        self.presynth = self.presynth / "stacks"  # <env>/cdk.tf.json

    def seed_state(self, env: str) -> None:
        """A state from an earlier apply (holding a storage key) in the fake azurerm backend."""
        state = self.backend / GROUP_VARS["TFSTATE_STORAGE_ACCOUNT"] / "tfstate" / f"{env}.tfstate"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(
            json.dumps({"serial": 1, "resources": [], "secrets": {"primary_access_key": STATE_SECRET}})
        )
        _give_away(self.backend)

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def _install_shim(name: str, target: Path, version: str | None = None) -> None:
    text = (_HERE / "shims" / name).read_text(encoding="utf-8")
    text = text.replace("#!/usr/bin/env python3", f"#!{AGENT_PYTHON}", 1)
    if version is not None:
        text = text.replace("@VERSION@", version)
    target.write_text(text, encoding="utf-8")
    target.chmod(0o755)


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    key: str
    needs: set[str]
    steps: list[dict[str, Any]]
    failure_steps: list[dict[str, Any]] = field(default_factory=list)
    agentless: bool = False
    image: str | None = None
    timeout_minutes: int | None = None
    variables: dict[str, str] = field(default_factory=dict)  # azure
    env: dict[str, Any] = field(default_factory=dict)  # github job env (unevaluated)
    context: dict[str, Any] = field(default_factory=dict)  # github: inputs, matrix
    condition: str | None = None
    id_token: bool = False


@dataclass
class StepResult:
    job: str
    name: str
    status: str  # ok | skipped | dry-run | failed
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Run:
    system: str
    pipeline: str
    run_id: str
    steps: list[StepResult] = field(default_factory=list)
    dry_runs: list[str] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (job, command line as run)
    published: dict[str, Path] = field(default_factory=dict)
    checkouts: dict[str, str] = field(default_factory=dict)  # job -> HEAD sha
    homes: dict[str, str] = field(default_factory=dict)  # job -> its agent's home folder
    approvals: list[dict[str, Any]] = field(default_factory=list)
    skipped_artifacts: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- azure compile


def azure_jobs(document: dict[str, Any], pipeline_pool: dict[str, Any] | None) -> list[Job]:
    stages = document.get("stages", [])
    order: list[str] = []
    deps: dict[str, set[str]] = {}
    previous = None
    for stage in stages:
        if "dependsOn" in stage:
            value = stage["dependsOn"]
            deps[stage["stage"]] = {value} if isinstance(value, str) else set(value or [])
        else:
            deps[stage["stage"]] = {previous} if previous else set()
        previous = stage["stage"]
        order.append(stage["stage"])
    jobs_by_stage: dict[str, list[str]] = {}
    out: list[Job] = []
    for stage in stages:
        variables = {}
        for item in stage.get("variables", []) or []:
            if "group" in item:
                variables.update(GROUP_VARS)
        keys = []
        for job in stage.get("jobs", []):
            name = job.get("job") or job.get("deployment")
            key = f"{stage['stage']}.{name}"
            keys.append(key)
            if "deployment" in job:
                run_once = job["strategy"]["runOnce"]
                steps = list(run_once["deploy"]["steps"])
                failure = list(((run_once.get("on") or {}).get("failure") or {}).get("steps") or [])
            else:
                steps, failure = list(job.get("steps", [])), []
            pool = job.get("pool", pipeline_pool)
            agentless = pool == "server"
            image = pool.get("vmImage") if isinstance(pool, dict) else None
            if isinstance(pool, dict) and pool.get("name") in SELF_HOSTED_POOLS:
                # the private profile's scale-set pool (infra/components/agent_pool.py): Ubuntu
                # 24.04 agents prepared per docs/first-deployment.md with the hosted image's tools
                image = "ubuntu-24.04"
            needs = {k for dep in deps[stage["stage"]] for k in jobs_by_stage.get(dep, [])}
            out.append(
                Job(
                    key=key,
                    needs=needs,
                    steps=steps,
                    failure_steps=failure,
                    agentless=agentless,
                    image=image,
                    timeout_minutes=job.get("timeoutInMinutes"),
                    variables=variables,
                    condition=job.get("condition"),
                )
            )
        jobs_by_stage[stage["stage"]] = keys
    return out


# --------------------------------------------------------------------------- github compile

_LEVEL = {"none": 0, "read": 1, "write": 2}


def _grants(permissions: Any, scope: str) -> int:
    if permissions is None:
        return 0
    if isinstance(permissions, str):
        return {"read-all": 1, "write-all": 2}.get(permissions, 0)
    return _LEVEL.get(str(permissions.get(scope, "none")), 0)


def github_jobs(workflow: dict[str, Any], load: Callable[[str], dict[str, Any]]) -> list[Job]:
    out: list[Job] = []
    instances: dict[str, list[str]] = {}
    for name, job in (workflow.get("jobs") or {}).items():
        matrix = ((job.get("strategy") or {}).get("matrix") or {}).get("include") or [{}]
        if not ((job.get("strategy") or {}).get("matrix") or {}).get("include"):
            plain = {k: v for k, v in ((job.get("strategy") or {}).get("matrix") or {}).items()}
            if plain:
                ((axis, values),) = plain.items()
                matrix = [{axis: v} for v in values]
        keys = []
        for index, entry in enumerate(matrix):
            suffix = f"[{index}]" if len(matrix) > 1 or entry else ""
            caller_perms = job.get("permissions", workflow.get("permissions"))
            if isinstance(job.get("uses"), str):
                called = load(job["uses"])
                declared = ((called.get("on") or {}).get("workflow_call") or {}).get("inputs") or {}
                inputs_raw = {k: v.get("default") for k, v in declared.items() if isinstance(v, dict)}
                inputs_raw.update(job.get("with") or {})
                for inner, spec in (called.get("jobs") or {}).items():
                    key = f"{name}{suffix}/{inner}"
                    keys.append(key)
                    asked = spec.get("permissions", called.get("permissions"))
                    out.append(
                        Job(
                            key=key,
                            needs={f"{name}{suffix}/{n}" for n in _as_set(spec.get("needs"))}
                            | {f"@{n}" for n in _as_set(job.get("needs"))},
                            steps=list(spec.get("steps", [])),
                            image=spec.get("runs-on"),
                            timeout_minutes=spec.get("timeout-minutes"),
                            env={**(called.get("env") or {}), **(spec.get("env") or {})},
                            context={
                                "matrix": entry,
                                "inputs_raw": inputs_raw,
                                "caller_if": job.get("if"),
                                "workflow_env": workflow.get("env") or {},
                            },
                            condition=spec.get("if"),
                            id_token=min(_grants(asked, "id-token"), _grants(caller_perms, "id-token")) == 2,
                        )
                    )
            else:
                key = f"{name}{suffix}"
                keys.append(key)
                out.append(
                    Job(
                        key=key,
                        needs={f"@{n}" for n in _as_set(job.get("needs"))},
                        steps=list(job.get("steps", [])),
                        image=job.get("runs-on"),
                        timeout_minutes=job.get("timeout-minutes"),
                        env={**(workflow.get("env") or {}), **(job.get("env") or {})},
                        context={"matrix": entry, "inputs_raw": {}, "caller_if": None, "workflow_env": {}},
                        condition=job.get("if"),
                        id_token=_grants(caller_perms, "id-token") == 2,
                    )
                )
        instances[name] = keys
    for job in out:
        resolved = set()
        for need in job.needs:
            resolved |= set(instances[need[1:]]) if need.startswith("@") else {need}
        job.needs = resolved
    return out


def _as_set(value: Any) -> set[str]:
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def topological(jobs: list[Job]) -> list[Job]:
    done: set[str] = set()
    ordered: list[Job] = []
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if j.needs <= done]
        if not ready:
            raise RehearsalError(f"dependency cycle or unknown need among {[j.key for j in pending]}")
        for job in ready:
            ordered.append(job)
            done.add(job.key)
            pending.remove(job)
    return ordered


# --------------------------------------------------------------------------- expressions

_GH_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,)|(?P<name>[A-Za-z_][\w.\-]*))"
)
_GH_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def gh_evaluate(expr: str, context: dict[str, Any], status: dict[str, bool]) -> Any:
    """A GitHub Actions expression: contexts, literals, ==, !=, &&, ||, !, status functions."""
    parts: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        match = _GH_TOKEN.match(expr, pos)
        if not match:
            raise RehearsalError(f"cannot parse GitHub expression {expr!r}")
        kind = match.lastgroup
        text = match.group(kind or "")
        pos = match.end()
        if kind == "str":
            parts.append(repr(text[1:-1].replace("''", "'")))
        elif kind == "num":
            parts.append(text)
        elif kind == "op":
            parts.append({"&&": " and ", "||": " or ", "!": " not "}.get(text, text))
        elif text in ("true", "false", "null"):
            parts.append({"true": "True", "false": "False", "null": "None"}[text])
        elif expr[pos:].lstrip().startswith("("):
            parts.append(f"_fn_{text}")
        else:
            parts.append(f"_v({text!r})")

    def lookup(dotted: str) -> Any:
        value: Any = context
        for part in dotted.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return ""
        return value

    scope = {
        "_v": lookup,
        "_fn_always": lambda: True,
        "_fn_success": lambda: not status["failed"],
        "_fn_failure": lambda: status["failed"],
        "_fn_cancelled": lambda: False,
    }
    return eval("".join(parts), {"__builtins__": {}}, scope)


def gh_substitute(text: str, context: dict[str, Any], status: dict[str, bool]) -> str:
    def one(match: re.Match[str]) -> str:
        value = gh_evaluate(match.group(1), context, status)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return _GH_EXPR.sub(one, text)


_MACRO = re.compile(r"\$\(([A-Za-z_][\w.]*)\)")


def az_macros(text: str, variables: dict[str, str]) -> str:
    lower = {k.lower(): v for k, v in variables.items()}
    return _MACRO.sub(lambda m: lower.get(m.group(1).lower(), m.group(0)), text)


def az_condition(condition: str | None, variables: dict[str, str], failed: bool, pm: Any) -> bool:
    if not condition:
        return not failed
    expr = re.sub(
        r"variables\['([^']+)'\]",
        lambda m: "'" + variables.get(m.group(1), "").replace("'", "''") + "'",
        condition,
    )
    expr = expr.replace("succeeded()", "true" if not failed else "false")
    expr = expr.replace("always()", "true").replace("failed()", "true" if failed else "false")
    return bool(pm._truthy(pm.evaluate(expr, {})))


# --------------------------------------------------------------------------- the runner


class Rehearsal:
    """Runs one compiled pipeline (``system`` azure|github) on a :class:`Machine`."""

    def __init__(self, machine: Machine, pm: Any, parse_cli: Callable[[list[str]], None]) -> None:
        self.machine = machine
        self.pm = pm
        self.parse_cli = parse_cli
        self.image_tools = {p.name for p in machine.image_bin.iterdir()}
        self.make_targets = pm.make_targets()[0]

    # ----- public

    def run(
        self,
        system: str,
        pipeline: str,
        jobs: list[Job],
        *,
        branch: str,
        event: str,
        run_id: str,
        inputs: dict[str, str] | None = None,
        resource_run: str | None = None,
    ) -> Run:
        run = Run(system, pipeline, run_id)
        store = self.machine.artifacts / run_id
        store.mkdir()
        self.resource_run = resource_run
        self.branch = branch
        self.event = event
        self.workflow_inputs = inputs or {}
        sha = self.machine.origin.feature if branch == "feature" else self.machine.origin.base
        self.sha = sha
        results: dict[str, str] = {}
        for job in topological(jobs):
            if any(results.get(n) != "succeeded" for n in job.needs):
                results[job.key] = "skipped"
                run.steps.append(StepResult(job.key, "(job)", "skipped", "a needed job did not succeed"))
                continue
            results[job.key] = self._job(run, job, store)
        failed = [k for k, v in results.items() if v == "failed"]
        if failed:
            detail = "\n".join(f"  {s.job} / {s.name}: {s.detail}" for s in run.steps if s.status == "failed")
            raise RehearsalError(f"{system}:{pipeline}: jobs failed: {failed}\n{detail}")
        return run

    # ----- one job

    def _job(self, run: Run, job: Job, store: Path) -> str:
        if job.agentless:
            return self._agentless(run, job)
        if job.image != "ubuntu-24.04":
            run.steps.append(
                StepResult(job.key, "(job)", "failed", f"runs on {job.image!r}, not ubuntu-24.04")
            )
            return "failed"
        home = Path(tempfile.mkdtemp(prefix="job-", dir=self.machine.root))
        run.homes[job.key] = str(home)
        workspace = home / "s"
        tools = home / "tools"
        tools.mkdir()
        (home / "tmp").mkdir()
        _give_away(home)
        state: dict[str, Any] = {
            "workspace": workspace,
            "home": home,
            "tools": tools,
            "failed": False,
            "variables": self._azure_variables(job) if run.system == "azure" else {},
            "steps": {},
            "store": store,
        }
        if run.system == "github":
            context = self._github_context(job, state)
            state["context"] = context
            if job.context.get("caller_if") and not gh_evaluate(
                job.context["caller_if"], context, {"failed": False}
            ):
                run.steps.append(StepResult(job.key, "(job)", "skipped", "if: false"))
                return "skipped-ok"
            if job.condition and not gh_evaluate(job.condition, context, {"failed": False}):
                run.steps.append(StepResult(job.key, "(job)", "skipped", "if: false"))
                return "skipped-ok"
        for step in job.steps:
            self._step(run, job, step, state)
        if state["failed"] and job.failure_steps:
            state["failed"] = False
            for step in job.failure_steps:
                self._step(run, job, step, state)
            state["failed"] = True
        return "failed" if state["failed"] else "succeeded"

    def _agentless(self, run: Run, job: Job) -> str:
        for step in job.steps:
            task = step.get("task", "")
            if not task.startswith("ManualValidation@"):
                run.steps.append(
                    StepResult(job.key, task, "failed", "only ManualValidation runs in pool: server here")
                )
                return "failed"
            inputs = {k: az_macros(str(v), self._azure_variables(job)) for k, v in step["inputs"].items()}
            run.approvals.append({"job": job.key, "timeout": job.timeout_minutes, **inputs})
            run.steps.append(StepResult(job.key, task, "ok", "approved (rehearsal resumes it)"))
        return "succeeded"

    def _azure_variables(self, job: Job) -> dict[str, str]:
        ws = "/rehearsal"
        variables = {
            "PYTHON_VERSION": "3.11",
            "PIP_CACHE_DIR": f"{ws}/.pip",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "Build.SourceVersion": self.sha,
            "Build.SourceBranch": f"refs/heads/{self.branch}",
            "Build.BuildId": "4711",
            "Build.BuildNumber": "rehearsal-1",
            "System.CollectionUri": "https://dev.azure.com/rehearsal/",
            "System.TeamProject": "genaiops",
            "System.AccessToken": "rehearsal-system-access-token",
            "System.OidcRequestUri": "https://dev.azure.com/rehearsal/oidc",
            "System.JobAttempt": "1",
            "System.StageName": job.key.split(".")[0],
            "System.PullRequest.TargetBranchName": "development",
            "Agent.OS": "Linux",
            "Common.TestResultsDirectory": "/tmp/TestResults",
            "Pipeline.Workspace": ws,
            "resources.pipeline.dev.projectID": "genaiops",
            "resources.pipeline.dev.pipelineID": "1",
            "resources.pipeline.dev.runID": self.resource_run or "",
            **job.variables,
        }
        return variables

    def _github_context(self, job: Job, state: dict[str, Any]) -> dict[str, Any]:
        status = {"failed": False}
        github = {
            "sha": self.sha,
            "ref": f"refs/heads/{self.branch}",
            "base_ref": "development" if self.event == "pull_request" else "",
            "event_name": self.event,
            "run_id": "4711",
            "run_attempt": "1",
            "server_url": "https://github.com",
            "repository": "rehearsal/genaiops",
            "token": "rehearsal-github-token",
        }
        base = {
            "github": github,
            "vars": dict(GROUP_VARS),
            "secrets": dict(SECRETS),
            "inputs": dict(self.workflow_inputs),
            "matrix": job.context.get("matrix", {}),
            "steps": state["steps"],
            "runner": {"temp": str(state["home"] / "tmp")},
        }
        inputs = {}
        for name, value in (job.context.get("inputs_raw") or {}).items():
            inputs[name] = gh_substitute(value, base, status) if isinstance(value, str) else value
        if job.context.get("inputs_raw") is not None and job.context.get("inputs_raw"):
            base["inputs"] = inputs
        return base

    # ----- one step

    def _step(self, run: Run, job: Job, step: dict[str, Any], state: dict[str, Any]) -> None:
        name = str(
            step.get("displayName")
            or step.get("name")
            or step.get("task")
            or step.get("uses")
            or step.get("script")
            or step.get("run")
            or "step"
        )[:80]
        if run.system == "azure":
            if not az_condition(step.get("condition"), state["variables"], state["failed"], self.pm):
                run.steps.append(StepResult(job.key, name, "skipped", f"condition {step.get('condition')}"))
                return
        else:
            cond = step.get("if")
            status = {"failed": state["failed"]}
            if cond is None:
                go = not state["failed"]
            else:
                go = bool(gh_evaluate(str(cond), state["context"], status))
            if not go:
                run.steps.append(StepResult(job.key, name, "skipped", f"if: {cond}"))
                return
        started = time.monotonic()
        try:
            detail = self._dispatch(run, job, step, state)
        except RehearsalError as exc:
            state["failed"] = True
            run.steps.append(StepResult(job.key, name, "failed", str(exc), time.monotonic() - started))
            return
        run.steps.append(StepResult(job.key, name, "ok", detail, time.monotonic() - started))

    def _dispatch(self, run: Run, job: Job, step: dict[str, Any], state: dict[str, Any]) -> str:
        if "checkout" in step:
            return self._checkout(run, job, state)
        if "download" in step:
            return "no automatic download"
        if "script" in step:
            script = az_macros(step["script"], state["variables"])
            env = {k: az_macros(str(v), state["variables"]) for k, v in (step.get("env") or {}).items()}
            return self._shell(run, job, state, script, env)
        if "task" in step:
            return self._azure_task(run, job, step, state)
        if "run" in step:
            script = gh_substitute(step["run"], state["context"], {"failed": state["failed"]})
            env = self._gh_env(job, step, state)
            return self._shell(run, job, state, script, env, step_id=step.get("id"))
        if "uses" in step:
            return self._action(run, job, step, state)
        raise RehearsalError(f"unknown step {step!r}")

    def _checkout(self, run: Run, job: Job, state: dict[str, Any]) -> str:
        workspace: Path = state["workspace"]
        proc = subprocess.run(
            _as_user(
                ["git", "clone", "-q", "--branch", self.branch, str(self.machine.origin.path), str(workspace)]
            ),
            env={**_git_env(), "HOME": str(state["home"])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RehearsalError(f"git clone failed: {proc.stderr.strip()}")
        run.checkouts[job.key] = _rev(workspace, "HEAD")
        return f"fresh clone of {self.branch} at {run.checkouts[job.key][:12]}"

    # ----- shell

    def _base_env(self, run: Run, job: Job, state: dict[str, Any]) -> dict[str, str]:
        home: Path = state["home"]
        path = os.pathsep.join([str(state["tools"]), str(self.machine.image_bin)])
        env = {
            "HOME": str(home),
            "PATH": path,
            "LANG": "C.UTF-8",
            "TMPDIR": str(home / "tmp"),
            "USER": "runner",
            "REHEARSAL_LOG": str(self.machine.log),
            "REHEARSAL_BACKEND": str(self.machine.backend),
            "REHEARSAL_STATE_SECRET": STATE_SECRET,
            "CI": "true",
        }
        if run.system == "azure":
            env["TF_BUILD"] = "True"
            for key, value in state["variables"].items():
                if key not in SECRETS:
                    env[key.upper().replace(".", "_")] = value
            env.pop("SYSTEM_ACCESSTOKEN", None)  # secret: mapped explicitly only
        else:
            env.update(
                {
                    "GITHUB_ACTIONS": "true",
                    "GITHUB_WORKSPACE": str(state["workspace"]),
                    "GITHUB_SHA": self.sha,
                    "RUNNER_TEMP": str(home / "tmp"),
                }
            )
            if job.id_token:
                env["ACTIONS_ID_TOKEN_REQUEST_URL"] = (
                    "https://pipelines.actions.githubusercontent.com/rehearsal"
                )
                env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "rehearsal-id-token-request"
        return env

    def _gh_env(self, job: Job, step: dict[str, Any], state: dict[str, Any]) -> dict[str, str]:
        context = state["context"]
        status = {"failed": state["failed"]}
        env = {}
        for source in (job.context.get("workflow_env") or {}, job.env, step.get("env") or {}):
            for key, value in source.items():
                env[key] = gh_substitute(str(value), context, status)
        return env

    def _shell(
        self,
        run: Run,
        job: Job,
        state: dict[str, Any],
        script: str,
        step_env: dict[str, str],
        *,
        step_id: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        workspace: Path = state["workspace"]
        env = {**self._base_env(run, job, state), **(extra_env or {}), **step_env}
        rewritten, dry = self._rewrite(run, job, script, env, state)
        outputs = state["home"] / "tmp" / f"out-{time.monotonic_ns()}"
        summary = state["home"] / "tmp" / "summary.md"
        if run.system == "github":
            outputs.touch()
            summary.touch()
            env["GITHUB_OUTPUT"] = str(outputs)
            env["GITHUB_STEP_SUMMARY"] = str(summary)
            _give_away(outputs.parent)
        script_file = state["home"] / "tmp" / f"step-{time.monotonic_ns()}.sh"
        script_file.write_text(rewritten)
        _give_away(script_file)
        command = _as_user(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", str(script_file)])
        try:
            proc = subprocess.run(
                command,
                cwd=workspace if workspace.is_dir() else state["home"],
                env=env,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RehearsalError(f"step did not finish within {STEP_TIMEOUT_S} s") from None
        for line in proc.stdout.splitlines():
            match = re.match(r"##vso\[task\.setvariable variable=([^;\]]+)[^\]]*\](.*)$", line)
            if match:
                state["variables"][match.group(1)] = match.group(2)
        if run.system == "github" and step_id:
            values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
            state["steps"][step_id] = {"outputs": values}
        for secret in SECRETS.values():
            if secret in proc.stdout or secret in proc.stderr:
                raise RehearsalError("a secret value appeared in the step's log")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            raise RehearsalError(f"exit {proc.returncode}: " + " | ".join(tail))
        return "dry-run: " + "; ".join(dry) if dry else "ran"

    def _rewrite(
        self, run: Run, job: Job, script: str, env: dict[str, str], state: dict[str, Any]
    ) -> tuple[str, list[str]]:
        """Check every program is available; turn heavy commands into dry runs (see docstring)."""
        out: list[str] = []
        dry: list[str] = []
        path = env["PATH"]
        for line in script.splitlines():
            stripped = line.strip()
            commands = self.pm.commands(stripped) if stripped and not stripped.startswith("#") else []
            if not commands:
                out.append(line)
                continue
            first = commands[0]
            for command in commands:
                program = shlex.split(_MACRO_PLACEHOLDER.sub("X", command.line))[0]
                self._require_tool(program, path, state, job)
            run.commands.append((job.key, stripped))
            words = first.args
            if first.tool == "make" and words and words[0] not in ("install", "help", "clean"):
                # every other target needs `install` first (a Makefile prerequisite): make would run
                # the pip install here, so the rehearsal seeds the venv here
                out.append(f"[ -x .venv/bin/python ] || {self._seed()}")
            if first.tool == "make" and words and words[0] in DRY_MAKE:
                dry.append(stripped)
                run.dry_runs.append(f"{job.key}: {stripped}")
                out.append(self._make_dry(stripped))
            elif first.tool == "make" and words and words[0] == "plan" and self.machine.presynth:
                env_arg = next(a.split("=", 1)[1] for a in words if a.startswith("ENV="))
                dry.append(f"{stripped} (synth+scan: stack synthesized once per session)")
                run.dry_runs.append(f"{job.key}: {stripped} (synth+scan only)")
                helper = (
                    f'.venv/bin/python "{_HERE / "rehearsal_plan.py"}" {env_arg} "{self.machine.presynth}"'
                )
                out.append(f"{self._make_dry(stripped)} && {helper}")
            elif first.tool == "make" and words and words[0] == "install":
                out.append(f"{self._seed()} && {stripped}")
            elif first.tool == "genaiops" and words and words[0] in DRY_GENAIOPS:
                dry.append(stripped)
                run.dry_runs.append(f"{job.key}: {stripped}")
                self.parse_cli(list(words))
                program = shlex.split(stripped)[0]
                out.append(
                    f"test -x {shlex.quote(program)} && echo {shlex.quote('rehearsal dry-run: ' + stripped)}"
                )
            else:
                out.append(line)
        return "\n".join(out) + "\n", dry

    def _seed(self) -> str:
        return f'"{AGENT_PYTHON}" "{_HERE / "rehearsal_venv.py"}" "{sys.prefix}"'

    def _make_dry(self, line: str) -> str:
        """``make -n`` and every recipe program must resolve (venv tools exist after install)."""
        checker = (
            # leading VAR=value assignments are the recipe's environment, not its program
            "while IFS= read -r l; do l=$(printf '%s' \"$l\" | sed -E 's/^([A-Za-z_][A-Za-z0-9_]*=[^ ]* +)+//'); "
            "p=${l%% *}; case \"$p\" in ''|echo|@*|for|if|test|true|:|set|cd) continue;; esac; "
            'command -v "$p" >/dev/null || { echo "recipe program not found: $p" >&2; exit 127; }; done'
        )
        return f"{line.replace('make ', 'make -n ', 1)} | {checker}"

    def _require_tool(self, program: str, path: str, state: dict[str, Any], job: Job) -> None:
        if program in BUILTINS or program.startswith("$"):
            return
        if "/" in program:
            target = state["workspace"] / program
            if not target.exists():
                raise RehearsalError(f"{program} does not exist yet: no earlier step installed it")
            return
        if shutil.which(program, path=path) is None:
            raise RehearsalError(
                f"`{program}` is neither on the documented ubuntu-24.04 image nor installed by an earlier step"
            )

    # ----- azure tasks

    def _azure_task(self, run: Run, job: Job, step: dict[str, Any], state: dict[str, Any]) -> str:
        task = step["task"]
        variables = state["variables"]
        inputs = {k: az_macros(str(v), variables) for k, v in (step.get("inputs") or {}).items()}
        workspace: Path = state["workspace"]
        if task in ("UsePythonVersion@0", "Cache@2", "PublishTestResults@2"):
            return "no effect on what the steps can call"
        if task == "TerraformInstaller@1":
            return self._install_terraform(inputs.get("terraformVersion", ""), state)
        if task == "AzureCLI@2":
            if inputs.get("azureSubscription") not in SERVICE_CONNECTIONS:
                raise RehearsalError(f"unknown service connection {inputs.get('azureSubscription')!r}")
            if inputs.get("scriptType") != "bash" or inputs.get("scriptLocation") != "inlineScript":
                raise RehearsalError("AzureCLI@2: only bash inline scripts are modelled")
            self._open_az_session(state)
            extra = {
                "AZURESUBSCRIPTION_CLIENT_ID": GROUP_VARS["AZURE_CLIENT_ID"],
                "AZURESUBSCRIPTION_TENANT_ID": GROUP_VARS["AZURE_TENANT_ID"],
                "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID": f"connection-{inputs['azureSubscription']}",
            }
            if str(step["inputs"].get("addSpnToEnvironment")).lower() == "true":
                extra.update(
                    {
                        "servicePrincipalId": extra["AZURESUBSCRIPTION_CLIENT_ID"],
                        "idToken": "static",
                        "tenantId": extra["AZURESUBSCRIPTION_TENANT_ID"],
                    }
                )
            secrets_env = {}
            for key, value in (step.get("env") or {}).items():
                secrets_env[key] = self._azure_secret_macro(str(value), variables)
            try:
                return self._shell(run, job, state, inputs["inlineScript"], secrets_env, extra_env=extra)
            finally:
                (state["home"] / ".azure" / "rehearsal-session.json").unlink(missing_ok=True)
        if task == "PublishPipelineArtifact@1":
            return self._publish(
                run, job, state, workspace / inputs["targetPath"], inputs["artifact"], azure=True
            )
        if task == "DownloadPipelineArtifact@2":
            source_run = run.run_id if inputs.get("buildType") == "current" else inputs.get("pipelineId", "")
            return self._download(
                run, state, source_run, inputs["artifactName"], workspace / inputs["targetPath"]
            )
        raise RehearsalError(f"the rehearsal does not model task {task}")

    def _azure_secret_macro(self, value: str, variables: dict[str, str]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in SECRETS:
                return SECRETS[name]
            return az_macros(match.group(0), variables)

        return _MACRO.sub(one, value)

    def _install_terraform(self, version: str, state: dict[str, Any]) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise RehearsalError(f"Terraform version {version!r} is not pinned to an exact release")
        _install_shim("terraform", state["tools"] / "terraform", version)
        return f"terraform {version} on PATH"

    def _open_az_session(self, state: dict[str, Any]) -> None:
        session = state["home"] / ".azure" / "rehearsal-session.json"
        session.parent.mkdir(exist_ok=True)
        session.write_text(json.dumps({"id": GROUP_VARS["AZURE_SUBSCRIPTION_ID"]}))
        _give_away(session.parent)

    # ----- github actions

    def _action(self, run: Run, job: Job, step: dict[str, Any], state: dict[str, Any]) -> str:
        uses = str(step["uses"])
        action = uses.split("@", 1)[0]
        context = state["context"]
        status = {"failed": state["failed"]}
        with_ = {
            k: ("true" if v is True else "false" if v is False else gh_substitute(str(v), context, status))
            for k, v in (step.get("with") or {}).items()
        }
        workspace: Path = state["workspace"]
        if action == "actions/checkout":
            return self._checkout(run, job, state)
        if action == "actions/setup-python":
            return "python on PATH (the image's cached 3.11)"
        if action == "hashicorp/setup-terraform":
            if with_.get("terraform_wrapper", "true") != "false":
                raise RehearsalError(
                    "setup-terraform's wrapper rewrites terraform's output: set terraform_wrapper: false"
                )
            return self._install_terraform(with_.get("terraform_version", "latest"), state)
        if action == "azure/login":
            if not job.id_token:
                raise RehearsalError("azure/login with OIDC needs `id-token: write` for this job")
            self._open_az_session(state)
            return "az session (OIDC)"
        if action == "actions/upload-artifact":
            return self._upload(run, state, with_)
        if action == "actions/download-artifact":
            source_run = with_.get("run-id") or run.run_id
            return self._download(run, state, source_run, with_["name"], workspace / with_.get("path", "."))
        raise RehearsalError(f"the rehearsal does not model action {action}")

    # ----- artifacts

    def _publish(
        self, run: Run, job: Job, state: dict[str, Any], source: Path, name: str, *, azure: bool
    ) -> str:
        target = state["store"] / name
        if target.exists():
            raise RehearsalError(f"artifact {name} was already published in this run")
        if not source.exists():
            if any(d.startswith(f"{job.key}:") for d in run.dry_runs):
                _mark_dry(state["store"], name)
                run.skipped_artifacts.append(name)
                return f"not published: {source.name} is written by a dry-run step"
            raise RehearsalError(f"Path does not exist: {source}")
        ignore = []
        if azure and (source / ".artifactignore").is_file():
            ignore = [
                p.strip()
                for p in (source / ".artifactignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")
            ]
        _copy_tree(source, target, lambda rel: _ignored(rel, ignore))
        run.published[name] = target
        return f"published {name}"

    def _upload(self, run: Run, state: dict[str, Any], with_: dict[str, str]) -> str:
        name = with_["name"]
        workspace: Path = state["workspace"]
        lines = [p.strip() for p in with_.get("path", "").splitlines() if p.strip()]
        include = [workspace / p for p in lines if not p.startswith("!")]
        exclude = [workspace / p[1:] for p in lines if p.startswith("!")]
        hidden = with_.get("include-hidden-files", "false") == "true"
        target = state["store"] / name
        existing = [p for p in include if p.exists()]
        if not existing:
            if with_.get("if-no-files-found", "warn") == "error":
                raise RehearsalError(f"upload-artifact {name}: no files found")
            _mark_dry(state["store"], name)
            run.skipped_artifacts.append(name)
            return f"warning: no files for {name}"
        for root in existing:

            def skip(rel: Path, root: Path = root) -> bool:
                full = root / rel
                if not hidden and any(part.startswith(".") for part in rel.parts):
                    return True
                return any(full == e or e in full.parents for e in exclude)

            _copy_tree(root, target, skip)
        run.published[name] = target
        return f"uploaded {name}"

    def _download(self, run: Run, state: dict[str, Any], source_run: str, name: str, target: Path) -> str:
        source = self.machine.artifacts / source_run / name
        if not source.is_dir():
            producer = self.machine.artifacts / source_run / ".dry"
            if producer.is_file() and name in producer.read_text().split():
                run.skipped_artifacts.append(name)
                return f"not downloaded: {name} comes from a dry-run step"
            raise RehearsalError(f"artifact {name} not found in run {source_run!r}")
        _copy_tree(source, target, lambda rel: False)
        _give_away(target)
        return f"downloaded {name} from run {source_run}"


_MACRO_PLACEHOLDER = re.compile(r"\$\([^)]*\)")


def _mark_dry(store: Path, name: str) -> None:
    """Remember that artifact ``name`` of this run would come from a dry-run step."""
    with (store / ".dry").open("a", encoding="utf-8") as handle:
        handle.write(name + "\n")


def _ignored(rel: Path, patterns: list[str]) -> bool:
    text = rel.as_posix()
    for pattern in patterns:
        if pattern.endswith("/"):
            if text == pattern[:-1] or text.startswith(pattern):
                return True
        elif text == pattern or rel.name == pattern:
            return True
    return False


def _copy_tree(source: Path, target: Path, skip: Callable[[Path], bool]) -> None:
    """Copy files as artifact services do: content only, no file modes (everything 0644)."""
    if source.is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / source.name)
        return
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if skip(rel) or not path.is_file():
            continue
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
        dst.chmod(0o644)


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]
