"""The main job: ``genaiops release --flow F --env E`` (``make release FLOW=F ENV=E``).

local up (local only) -> experiment + evaluate -> gate -> register -> build -> push -> deploy
-> smoke -> traffic shift, each step printing one progress line with its duration; it ends by
printing the scoring URL and the reports. Every step calls the other parts' Python APIs:

- ``release.local_env.environment.LocalEnvironment.up``
- ``release.experiment.pipeline.run / gate / register``
- ``release.image.build_image`` and ``release.image_context.push_flow_image`` (helpers of
  ``release.commands.image_cmd``: ``docker_client``, ``registry_for``, ``repository_name``)
- ``release.strategies.Rollout`` on the flow's target (:func:`open_target`)

A failed gate, build, smoke test or traffic check stops the job with a non-zero exit; traffic
then stays on (or goes back to) what served before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from release.config import REPO_ROOT, EnvironmentConfig, EnvSecret, FlowSettings, KeyVaultSecret, load_config
from release.errors import CheckFailed, UserError
from release.release_state import ReleaseStore, releases_dir
from release.strategies import Rollout, RolloutResult, new_deployment_name
from release.targets.base import DeploymentSpec, Target

Progress = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- targets


def flow_settings(cfg: EnvironmentConfig, flow: str) -> FlowSettings:
    if flow not in cfg.flows:
        raise UserError(
            f"config/{cfg.environment}.yaml: flows.{flow}: no such flow; flows here: {sorted(cfg.flows)}"
        )
    return cfg.flows[flow]


def local_environment(cfg: EnvironmentConfig) -> Any:
    from release.local_env.environment import LocalEnvironment

    return LocalEnvironment(cfg.local_settings(), source=f"config/{cfg.environment}.yaml", log=_print)


def local_secret_environ(cfg: EnvironmentConfig, env: Any) -> dict[str, str]:
    """This machine's environment plus the local model key ``local up`` keeps in its state folder."""
    environ = dict(os.environ)
    ref = cfg.local_settings().model_api_key
    if isinstance(ref, EnvSecret) and not environ.get(ref.env):
        environ[ref.env] = env.model_api_key()
    return environ


def open_target(cfg: EnvironmentConfig, flow: str) -> Target:
    """The deployment target of ``flow`` in this environment (``flows.<f>.deployment.target``)."""
    kind = flow_settings(cfg, flow).deployment.target
    if kind == "local":
        from release.targets.local import LocalTarget

        env = local_environment(cfg)
        docker_host = env.docker_host()
        if docker_host is None or not env.router.healthy():
            raise UserError(
                f"the local environment of config/{cfg.environment}.yaml is not running; "
                "start it with 'genaiops local up' (make local-up)"
            )
        scope = hashlib.sha256(str(env.state_dir).encode()).hexdigest()[:8]
        deployment = flow_settings(cfg, flow).deployment
        return LocalTarget(
            flow,
            docker_host=docker_host,
            router=env.router,
            scope=scope,
            workers=getattr(deployment, "workers", 2),
            environ=local_secret_environ(cfg, env),
        )
    if kind == "managed":
        from release.targets.managed import ManagedTarget

        return ManagedTarget(cfg, flow)
    if kind == "kubernetes":
        from release.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(cfg, flow)
    from release.targets.appservice import AppServiceTarget

    return AppServiceTarget(cfg, flow)


def release_store(cfg: EnvironmentConfig, flow: str) -> ReleaseStore:
    root = os.environ.get("GENAIOPS_RELEASES_DIR")
    directory = Path(root) / cfg.environment if root else releases_dir(cfg.environment)
    return ReleaseStore(flow, cfg.environment, directory)


def deployment_spec(
    cfg: EnvironmentConfig, flow: str, image: str, labels: dict[str, str] | None = None
) -> DeploymentSpec:
    """A uniquely named deployment of ``image``; connection keys as references, never values."""
    from release.image import used_connections
    from release.serving.settings import key_env

    settings = flow_settings(cfg, flow)
    flow_dir = (REPO_ROOT / settings.path).resolve()
    secret_env: dict[str, str] = {}
    for connection in used_connections(flow_dir, cfg.connections) if flow_dir.is_dir() else []:
        if isinstance(connection.secret, EnvSecret):
            secret_env[key_env(connection.name)] = connection.secret.env
        elif isinstance(connection.secret, KeyVaultSecret):
            secret_env[key_env(connection.name)] = connection.secret.key_vault_secret
    name = new_deployment_name(flow)
    return DeploymentSpec(
        flow=flow,
        name=name,
        image=image,
        secret_env=secret_env,
        instance_count=getattr(settings.deployment, "instance_count", 1),
        labels={"genaiops.release": name, **(labels or {})},
    )


def roll_out(
    cfg: EnvironmentConfig,
    flow: str,
    image: str,
    progress: Progress = _print,
    labels: dict[str, str] | None = None,
) -> tuple[Target, RolloutResult]:
    """deploy -> smoke -> traffic for one pinned image, with the flow's configured strategy."""
    settings = flow_settings(cfg, flow)
    target = open_target(cfg, flow)
    spec = deployment_spec(cfg, flow, image, labels)
    progress(f"  {settings.release.strategy} release of {image} as deployment {spec.name}")
    result = Rollout(target, settings.release, release_store(cfg, flow), progress=progress).run(spec)
    return target, result


# --------------------------------------------------------------------------- the main job


@dataclass
class StepTiming:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class JobReport:
    flow: str
    environment: str
    started_at: float
    steps: list[StepTiming] = field(default_factory=list)
    evaluation_report: str | None = None
    image: str | None = None
    deployment: str | None = None
    traffic: dict[str, int] = field(default_factory=dict)
    scoring_url: str | None = None
    status: str = "running"
    error: str | None = None


class ReleaseJob:
    """One run of the main job; :meth:`run` returns the report path (raises on failure)."""

    STEPS = ("local up", "experiment+evaluate", "gate", "register", "build", "push", "deploy+smoke+traffic")

    def __init__(
        self, flow: str, env: str, progress: Progress = _print, reports_dir: Path | None = None
    ) -> None:
        self.cfg = load_config(env)
        self.flow = flow
        self.settings = flow_settings(self.cfg, flow)
        self.progress = progress
        self.reports_dir = reports_dir or REPO_ROOT / "reports"
        self.report = JobReport(flow, self.cfg.environment, time.time())
        self._index = 0

    @contextmanager
    def step(self, name: str) -> Iterator[StepTiming]:
        self._index += 1
        timing = StepTiming(name, 0.0)
        started = time.monotonic()
        self.progress(f"[{self._index}/{len(self.STEPS)}] {name} ...")
        try:
            yield timing
        finally:
            timing.seconds = round(time.monotonic() - started, 2)
            self.report.steps.append(timing)
        extra = f": {timing.detail}" if timing.detail else ""
        self.progress(f"[{self._index}/{len(self.STEPS)}] {name} done in {timing.seconds:.1f} s{extra}")

    def run(self) -> Path:
        # one line per model call would drown the progress lines
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            self._run()
            self.report.status = "released"
        except Exception as exc:
            self.report.status = "failed"
            self.report.error = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
            self._write_report()
            raise
        return self._write_report()

    def _run(self) -> None:
        from release.experiment import pipeline

        cfg, flow = self.cfg, self.flow
        with self.step("local up") as s:
            if cfg.kind == "local":
                local_environment(cfg).up()
            else:
                s.detail = "skipped (Azure environment: infrastructure comes from 'make apply')"
        options = pipeline.Options(
            flow=flow,
            env=cfg.environment,
            progress=False,
            reports_dir=self.reports_dir,
            record_selection=True,
        )
        with self.step("experiment+evaluate") as s:
            evaluation = pipeline.run(options, with_evaluation=True)
            self.report.evaluation_report = str(evaluation.report_dir / "report.html")
            s.detail = f"{len(evaluation.runs)} run(s); report {evaluation.report_dir / 'report.html'}"
        with self.step("gate") as s:
            outcome, report_dir = pipeline.gate(options, evaluation.report_dir)
            if not outcome.passed:
                raise CheckFailed(
                    f"gate failed for {flow} ({report_dir}); nothing was deployed:\n  "
                    + "\n  ".join(outcome.failures)
                )
            assert outcome.chosen is not None
            variant = outcome.chosen.variant_id
            s.detail = f"chosen variant {variant}"
        with self.step("register") as s:
            registrations = pipeline.register(options)
            version = next((r.version for r in registrations if r.kind == "flow"), None)
            s.detail = f"flow version {version}"
        built = self._build(version, variant)
        pushed = self._push(built)
        self.report.image = pushed
        with self.step("deploy+smoke+traffic") as s:
            target, result = roll_out(
                cfg,
                flow,
                pushed,
                progress=self.progress,
                labels={"genaiops.flow-version": str(version), "genaiops.variant": variant[:60]},
            )
            self.report.deployment = result.deployment
            self.report.traffic = result.traffic
            self.report.scoring_url = target.scoring_url()
            s.detail = f"{result.deployment} at 100 %"

    def _build(self, version: str | None, variant: str) -> str:
        from release.base_image import base_image_for
        from release.image import ImageSpec, build_image, records_dir, save_record, used_connections
        from release.image_context import docker_client, repository_name
        from release.registry.hashing import content_hash

        flow_dir = (REPO_ROOT / self.settings.path).resolve()
        with self.step("build") as s:
            spec = ImageSpec(
                flow=self.flow,
                flow_dir=flow_dir,
                repository=repository_name(self.flow),
                tag=f"{version or 'dev'}-{content_hash(flow_dir)[7:19]}",
                base_image=base_image_for(self.cfg),
                connections=tuple(used_connections(flow_dir, self.cfg.connections)),
                version=version,
                variant=variant,
            )
            client = docker_client(self.cfg)
            built = build_image(client, spec, records_dir(self.cfg.environment) / "context" / self.flow)
            save_record(
                self.cfg.environment,
                self.flow,
                "build",
                {
                    "flow": self.flow,
                    "reference": built.reference,
                    "image_id": built.image_id,
                    "labels": built.labels,
                },
            )
            s.detail = built.reference
        return built.reference

    def _push(self, image: str) -> str:
        from release.image_context import push_flow_image

        with self.step("push") as s:
            pushed = push_flow_image(self.cfg, self.flow, image)
            s.detail = pushed.reference
        return pushed.reference

    def _write_report(self) -> Path:
        folder = self.reports_dir / self.flow / "releases"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.report.started_at))
        path = folder / f"release-{self.cfg.environment}-{stamp}.json"
        path.write_text(json.dumps(asdict(self.report), indent=2) + "\n", encoding="utf-8")
        return path
