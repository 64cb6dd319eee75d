"""Flow images: render our Dockerfile, stage a small build context, build with the docker SDK.

The context holds the Dockerfile, ``requirements.txt`` and the pinned wheels (prepared once on
the host with ``pip wheel -c requirements.lock`` and cached), the serving code and the flow.
Inside the image the packages install with ``--no-index`` from those wheels in a separate
build stage, so the final image carries no wheels. Labels record git sha, flow hash,
registered version and variant. No secret is read here: connections are described by name,
category, target and the *names* of the environment variables that carry their keys.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import jinja2

from release.base_image import ensure_base_image
from release.config import REPO_ROOT, Connection
from release.errors import UserError
from release.git import commit_epoch, git_sha
from release.project import PACKAGE_ROOT
from release.registry.hashing import EXCLUDED_DIRS, EXCLUDED_SUFFIXES, content_hash
from release.reproducible import NORMALIZATION_VERSION, normalize_image
from release.serving.settings import base_env, key_env

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
REQUIREMENTS = TEMPLATES / "image-requirements.txt"
LOCK_FILE = (
    Path(__file__).resolve().parent / "requirements.lock"
)  # a link to ../requirements.lock; a file in the wheel
IMAGE_UID = 10001
# File times inside the image (build context and venv): one constant, so that layers do not
# depend on checkout or build time and the layer cache holds across commits. The image's own
# ``created`` times are SOURCE_DATE_EPOCH (the commit time): see release/reproducible.py.
FILE_EPOCH = 0
BUILD_TIMEOUT_S = 1800
WHEEL_TIMEOUT_S = 900
LABEL_PREFIX = "ai.genaiops"
# The part of our package that runs inside the image (nothing else of release/ is copied).
SERVING_FILES = (
    "release/__init__.py",
    "release/errors.py",
    "release/yamlfile.py",
    "release/engine/__init__.py",
    "release/engine/base.py",
    "release/engine/flex_entry.py",
    "release/engine/promptflow.py",
    "release/project.py",
    "release/serving/__init__.py",
    "release/serving/__main__.py",
    "release/serving/app.py",
    "release/serving/settings.py",
    "release/serving/server.py",
    "release/serving/telemetry.py",
)


class ImageError(UserError):
    """An image could not be built; the message names the flow, the step and the fix."""


@dataclass(frozen=True)
class ImageSpec:
    flow: str
    flow_dir: Path
    repository: str  # e.g. "genaiops/web_classification" or "127.0.0.1:5000/web_classification"
    tag: str
    base_image: str
    connections: tuple[Connection, ...] = ()
    version: str | None = None  # the registered flow version
    variant: str | None = None  # the chosen variant id
    variant_config: dict[str, Any] = field(default_factory=dict)  # {"variants": {...}, "params": {...}}
    connection_overrides: dict[str, str] = field(default_factory=dict)  # flow's name -> environment's
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    image_id: str
    labels: dict[str, str]
    layers: tuple[str, ...]  # RootFS diff ids, base first
    log: str  # the build output (stream lines)
    seconds: float


# --------------------------------------------------------------------------- small helpers


def used_connections(
    flow_dir: Path, connections: Iterable[Connection], overrides: dict[str, str] | None = None
) -> list[Connection]:
    """The environment's connections that the flow's files name (DAG YAML, flex code, prompts),
    directly or through ``connection_overrides`` (flow name -> environment connection)."""
    text = ""
    for file in sorted(flow_dir.rglob("*")):
        rel = file.relative_to(flow_dir)
        if any(p in EXCLUDED_DIRS for p in rel.parts) or not file.is_file():
            continue
        if file.suffix in {".yaml", ".yml", ".py", ".json", ".jinja2", ".prompty"}:
            text += file.read_text(encoding="utf-8", errors="replace") + "\n"
    mapped = {target for source, target in (overrides or {}).items() if source in text}
    return [c for c in connections if c.name in text or c.name in mapped]


def serving_manifest(
    connections: Iterable[Connection],
    variant: dict[str, Any] | None = None,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What the server needs at start-up: the flow, the chosen variant, and per connection the
    non-secret settings and the *names* of the variables carrying its key."""
    return {
        "flow_dir": "/app/flow",
        "variant": {
            "variants": dict((variant or {}).get("variants") or {}),
            "params": dict((variant or {}).get("params") or {}),
        },
        "connection_overrides": dict(overrides or {}),
        "connections": [
            {
                "name": c.name,
                "category": c.category,
                "target": c.target,
                "api_version": c.api_version,
                "api_type": c.api_type,
                "key_env": key_env(c.name),
                "base_env": base_env(c.name),
            }
            for c in connections
        ],
    }


def settings_json(connections: Iterable[Connection]) -> dict[str, str]:
    """Like promptflow's ``settings.json``: each variable a connection needs, with no value."""
    return {key_env(c.name): "" for c in connections}


def render_dockerfile(base_image: str, labels: dict[str, str] | None = None) -> str:
    """Our Dockerfile; ``labels`` become one LABEL instruction at the very end (no file layer),
    in sorted key order."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - a Dockerfile, not HTML
    )
    return env.get_template("Dockerfile.j2").render(
        base_image=base_image,
        uid=IMAGE_UID,
        file_epoch=FILE_EPOCH,
        labels=dict(sorted((labels or {}).items())),
    )


def _cache_root() -> Path:
    root = os.environ.get("GENAIOPS_CACHE_DIR") or os.path.join(Path.home(), ".cache", "genaiops")
    return Path(root)


def image_requirements(flow_dir: Path) -> str:
    """Our pinned serving requirements plus the flow's own ``requirements.txt`` (if any)."""
    text = REQUIREMENTS.read_text(encoding="utf-8")
    own = flow_dir / "requirements.txt"
    if own.is_file():
        text += f"# from {flow_dir.name}/requirements.txt\n" + own.read_text(encoding="utf-8")
    return text


def wheel_cache(requirements_text: str, lock: Path = LOCK_FILE) -> Path:
    """A folder with every wheel the image needs, made once per requirements+lock content."""
    key = hashlib.sha256(requirements_text.encode() + b"\0" + lock.read_bytes()).hexdigest()[:16]
    target = _cache_root() / "wheels" / key
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{key}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # one preparation at a time; the others then reuse it
        try:
            if not (target / ".complete").is_file():
                _prepare_wheels(requirements_text, lock, target, key)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    return target


def _prepare_wheels(requirements_text: str, lock: Path, target: Path, key: str) -> None:
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    requirements = partial / ".requirements.txt"
    requirements.write_text(requirements_text, encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        str(lock),
        "-r",
        str(requirements),
        "-w",
        str(partial),
    ]
    log.info("preparing the image's pinned wheels (once; cached in %s)", target)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WHEEL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageError(
            f"pip wheel for the image took over {WHEEL_TIMEOUT_S} s; check the package index"
        ) from None
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageError(
            f"pip wheel -r {requirements.name} -c {lock} failed: {proc.stderr.strip()[-1500:]}; "
            "check that the package index is reachable and the pins exist"
        )
    (partial / ".complete").write_text(key)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for file in sorted(src.iterdir()):
        if file.name.startswith("."):
            continue
        try:
            os.link(file, dst / file.name)
        except OSError:
            shutil.copy2(file, dst / file.name)


def _copy_flow(src: Path, dst: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in EXCLUDED_DIRS or n.endswith(EXCLUDED_SUFFIXES)}

    shutil.copytree(src, dst, ignore=ignore)


def normalize_tree(root: Path) -> None:
    """Same content -> same layer bytes, whatever the checkout time and umask: every time is
    ``FILE_EPOCH``; folders 0755, files 0644 (0755 when executable by the owner)."""
    for path in sorted([root, *root.rglob("*")]):
        if not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(0o755 if path.is_dir() or mode & 0o100 else 0o644)
        os.utime(path, (FILE_EPOCH, FILE_EPOCH), follow_symlinks=False)


def stage_context(
    spec: ImageSpec, build_dir: Path, wheels: Path, labels: dict[str, str] | None = None
) -> Path:
    """Write the build context for ``spec`` into ``build_dir`` (replaced) and return it."""
    if not spec.flow_dir.is_dir():
        raise ImageError(
            f"flow {spec.flow!r}: folder {spec.flow_dir} does not exist; check flows.{spec.flow}.path"
        )
    if not any((spec.flow_dir / n).is_file() for n in ("flow.dag.yaml", "flow.flex.yaml", "flow.yaml")):
        raise ImageError(
            f"flow {spec.flow!r}: {spec.flow_dir} has no flow.dag.yaml or flow.flex.yaml; "
            "point flows.<name>.path at a prompt flow folder"
        )
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    (build_dir / "Dockerfile").write_text(render_dockerfile(spec.base_image, labels))
    (build_dir / "requirements.txt").write_text(image_requirements(spec.flow_dir), encoding="utf-8")
    _link_tree(wheels, build_dir / "wheels")
    # one folder per layer, holding the image's paths from / down (see Dockerfile.j2)
    app = build_dir / "layer-app" / "app"
    for rel in SERVING_FILES:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_ROOT / rel, app / rel)
    (app / "serving.json").write_text(
        json.dumps(
            serving_manifest(spec.connections, spec.variant_config, spec.connection_overrides), indent=2
        )
        + "\n"
    )
    (app / "settings.json").write_text(json.dumps(settings_json(spec.connections), indent=2) + "\n")
    _copy_flow(spec.flow_dir, build_dir / "layer-flow" / "app" / "flow")
    normalize_tree(build_dir)
    return build_dir


def image_labels(spec: ImageSpec, sha: str | None = None) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.revision": sha or git_sha() or "unknown",
        "org.opencontainers.image.title": spec.flow,
        f"{LABEL_PREFIX}.flow": spec.flow,
        f"{LABEL_PREFIX}.flow-hash": content_hash(spec.flow_dir),
        f"{LABEL_PREFIX}.version": spec.version or "unregistered",
        f"{LABEL_PREFIX}.variant": spec.variant or "default",
        f"{LABEL_PREFIX}.base-image": spec.base_image,
        f"{LABEL_PREFIX}.connection-env": ",".join(sorted(settings_json(spec.connections))),
    }
    labels.update(spec.extra_labels)
    return labels


# --------------------------------------------------------------------------- build


def build_image(
    client: docker.DockerClient,
    spec: ImageSpec,
    build_dir: Path,
    *,
    labels: dict[str, str] | None = None,
    timeout_s: float = BUILD_TIMEOUT_S,
    nocache: bool = False,
    source_date_epoch: int | None = None,
) -> BuiltImage:
    """Build ``spec`` with the docker SDK (``--network host``) and return the built image.

    Reproducible: the same sources and ``source_date_epoch`` (default: :func:`build_epoch`)
    give the same image id, with or without the layer cache (release/reproducible.py).
    """
    started = time.monotonic()
    epoch = build_epoch() if source_date_epoch is None else source_date_epoch
    ensure_base_image(client, spec.base_image)
    wheels = wheel_cache(image_requirements(spec.flow_dir))
    final_labels = labels if labels is not None else image_labels(spec)
    stage_context(spec, build_dir, wheels, final_labels)
    lines: list[str] = []
    api = client.api
    try:
        stream = api.build(
            path=str(build_dir),
            tag=spec.reference,
            network_mode="host",
            rm=True,
            forcerm=True,
            nocache=nocache,
            decode=True,
            buildargs={"BASE_IMAGE": spec.base_image},
            timeout=int(timeout_s),
        )
        image_id = ""
        for chunk in stream:
            if time.monotonic() - started > timeout_s:
                raise ImageError(f"building {spec.reference} took over {timeout_s:.0f} s; nothing was tagged")
            if "stream" in chunk:
                lines.append(str(chunk["stream"]))
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if "error" in chunk:
                tail = "".join(lines[-20:])
                raise ImageError(
                    f"docker build of flow {spec.flow!r} failed: {chunk['error'].strip()}\n{tail}"
                )
    except docker.errors.APIError as exc:
        raise ImageError(f"docker build of flow {spec.flow!r} failed: {exc.explanation}") from None
    classic = client.images.get(image_id or spec.reference)
    image = client.images.get(_fixed_times(client, classic.id, spec.reference, epoch))
    layers = tuple(image.attrs.get("RootFS", {}).get("Layers", []))
    return BuiltImage(
        reference=spec.reference,
        image_id=image.id,
        labels=dict(image.labels),
        layers=layers,
        log="".join(lines),
        seconds=time.monotonic() - started,
    )


def build_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` (seconds) for a build: the variable when set, else the commit
    time of ``HEAD``, else 0 (https://reproducible-builds.org/specs/source-date-epoch/)."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        if not raw.isdigit():
            raise ImageError(
                f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds; unset it or fix it"
            )
        return int(raw)
    return commit_epoch() or 0


def _fixed_times(client: docker.DockerClient, classic_id: str, reference: str, epoch: int) -> str:
    """The id of ``classic_id`` with fixed timestamps, tagged ``reference``; a classic build
    that was served whole from the cache maps to the image made last time (no reload)."""
    memo = _cache_root() / "reproducible" / f"{classic_id.split(':')[-1]}-{epoch}-v{NORMALIZATION_VERSION}"
    if memo.is_file():
        known = memo.read_text().strip()
        try:
            repository, _, tag = reference.rpartition(":")
            client.images.get(known).tag(repository, tag=tag)
            return known
        except docker.errors.ImageNotFound:
            pass
    fixed = normalize_image(client, classic_id, reference, epoch)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(fixed)
    return fixed


# --------------------------------------------------------------------------- records


def records_dir(environment: str) -> Path:
    """Where build/push/promotion records of one environment live (never secrets)."""
    root = os.environ.get("GENAIOPS_IMAGES_DIR") or str(REPO_ROOT / ".genaiops" / "images")
    return Path(root) / environment


def save_record(environment: str, flow: str, kind: str, data: dict[str, Any]) -> Path:
    """Write ``<records>/<env>/<flow>.<kind>.json`` (kind: build | push) atomically."""
    path = records_dir(environment) / f"{flow}.{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_record(environment: str, flow: str, kind: str) -> dict[str, Any] | None:
    path = records_dir(environment) / f"{flow}.{kind}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
