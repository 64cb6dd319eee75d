"""``genaiops build | push | promote``: flow images, registries and promotion by digest.

* ``build --flow F --env E``: our Dockerfile, the docker SDK, labels (git sha, flow hash,
  registered version, variant); records ``<images>/<env>/<flow>.build.json``.
* ``push --flow F --env E``: the local registry for ``local``, ACR (Azure AD token exchange,
  never the admin user) for Azure environments; records the digest in ``<flow>.push.json``.
* ``promote --flow F --env prod [--from dev]``: copies the digest the source environment pushed
  into this environment's registry, byte for byte (no rebuild), and records its provenance.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from release.commands.common import add_env, add_flow
from release.config import ENVIRONMENTS, REPO_ROOT, EnvironmentConfig, load_config
from release.errors import UserError
from release.image import (
    ImageSpec,
    build_image,
    load_record,
    records_dir,
    save_record,
    used_connections,
)
from release.image_context import (
    connection_overrides,
    docker_client,
    flow_settings,
    push_flow_image,
    registry_for,
    repository_name,
)
from release.oci import (
    Provenance,
    RegistryClient,
    copy_image,
    record_provenance,
)
from release.registry.hashing import content_hash

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    build = sub.add_parser("build", help="build the flow's OCI image (our Dockerfile, docker SDK)")
    add_env(build)
    add_flow(build)
    build.add_argument("--tag", default=None, help="image tag (default: <version>-<flow hash>)")
    build.add_argument("--base-image", default=None, help="BASE_IMAGE (default: local.base_image)")
    build.add_argument("--version", dest="flow_version", default=None, help="registered flow version label")
    build.add_argument("--variant", default=None, help="chosen variant id label")
    build.set_defaults(handler=_build)

    push = sub.add_parser("push", help="push the built image to the environment's registry")
    add_env(push)
    add_flow(push)
    push.add_argument("--image", default=None, help="local image reference (default: the last build)")
    push.set_defaults(handler=_push)

    promote = sub.add_parser("promote", help="copy the source environment's image digest (no rebuild)")
    add_env(promote)
    add_flow(promote)
    promote.add_argument("--from", dest="source", default=None, help="source environment (default: previous)")
    promote.add_argument("--digest", default=None, help="sha256 digest to promote (default: source's push)")
    promote.set_defaults(handler=_promote)


# --------------------------------------------------------------------------- shared helpers


def _default_labels(cfg: EnvironmentConfig, flow: str) -> tuple[str | None, str | None, dict[str, Any]]:
    """Registered version, chosen variant id and variant settings from the local registry."""
    if cfg.kind != "local":
        return None, None, {}
    try:
        from release.registry.local import LocalRegistry

        state = Path(cfg.local_settings().state_dir)
        registry = LocalRegistry(state if state.is_absolute() else REPO_ROOT / state)
        selection = registry.baseline(flow)
        if selection is not None:
            return selection.flow_version, selection.variant_id, dict(selection.variant)
        latest = registry.latest("flow", flow)
        return (latest.version if latest else None), None, {}
    except Exception as exc:  # the registry is optional for a plain build
        log.debug("no registry defaults: %s", exc)
        return None, None, {}


def parse_variant(text: str, flow_dir: Path) -> dict[str, Any]:
    """``node=variant_1,temperature=0.2`` -> node variants and parameters (by the flow's nodes)."""
    import yaml

    from release.engine import get_engine

    nodes = get_engine().describe(flow_dir).variants
    variants: dict[str, str] = {}
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise UserError(
                f"--variant {text!r}: {part!r} is not key=value; e.g. summarize=variant_1,temperature=0.2"
            )
        if key in nodes:
            if value not in nodes[key]:
                raise UserError(f"--variant: node {key!r} has variants {nodes[key]}, not {value!r}")
            variants[key] = value
        else:
            params[key] = yaml.safe_load(value)
    return {"variants": variants, "params": params}


# --------------------------------------------------------------------------- handlers


def _build(args: argparse.Namespace) -> int:
    cfg = load_config(args.env)
    settings = flow_settings(cfg, args.flow)
    flow_dir = (REPO_ROOT / settings.path).resolve()
    if not flow_dir.is_dir():
        raise UserError(
            f"config/{cfg.environment}.yaml: flows.{args.flow}.path: {settings.path} does not exist; "
            "create the flow or fix the path"
        )
    overrides = connection_overrides(cfg, settings, flow_dir)
    version, variant, variant_config = _default_labels(cfg, args.flow)
    version = args.flow_version or version
    if args.variant:
        variant, variant_config = args.variant, parse_variant(args.variant, flow_dir)
    tag = args.tag or f"{version or 'dev'}-{content_hash(flow_dir)[7:19]}"
    spec = ImageSpec(
        flow=args.flow,
        flow_dir=flow_dir,
        repository=repository_name(args.flow),
        tag=tag,
        base_image=args.base_image or cfg.local_settings().base_image,
        connections=tuple(used_connections(flow_dir, cfg.connections, overrides)),
        version=version,
        variant=variant,
        variant_config=variant_config,
        connection_overrides=overrides,
    )
    client = docker_client(cfg)
    build_dir = records_dir(cfg.environment) / "context" / args.flow
    built = build_image(client, spec, build_dir)
    record: dict[str, Any] = {
        "flow": args.flow,
        "reference": built.reference,
        "image_id": built.image_id,
        "labels": built.labels,
        "layers": list(built.layers),
        "seconds": round(built.seconds, 2),
    }
    save_record(cfg.environment, args.flow, "build", record)
    print(f"built {built.reference} ({built.image_id[:19]}) in {built.seconds:.1f} s")
    needs = built.labels.get("ai.genaiops.connection-env", "")
    if needs:
        print(f"the container needs these environment variables at start-up: {needs}")
    return 0


def _push(args: argparse.Namespace) -> int:
    cfg = load_config(args.env)
    flow_settings(cfg, args.flow)
    image = args.image
    if not image:
        record = load_record(cfg.environment, args.flow, "build")
        if record is None:
            raise UserError(
                f"flow {args.flow!r} has no build in environment {cfg.environment!r}; "
                f"run 'genaiops build --flow {args.flow} --env {cfg.environment}' first"
            )
        image = str(record["reference"])
    pushed = push_flow_image(cfg, args.flow, image)
    print(f"pushed {pushed.reference}")
    return 0


def previous_environment(env: str) -> str:
    order = list(ENVIRONMENTS)
    if env not in order or order.index(env) == 0:
        raise UserError(f"--env {env}: there is no environment before it to promote from; give --from")
    return order[order.index(env) - 1]


def _promote(args: argparse.Namespace) -> int:
    cfg = load_config(args.env)
    flow_settings(cfg, args.flow)
    source_env = args.source or previous_environment(cfg.environment)
    source_cfg = load_config(source_env)
    record = load_record(source_env, args.flow, "push")
    if record is None and not args.digest:
        raise UserError(
            f"environment {source_env!r} has no pushed image of {args.flow!r}; release it there first "
            f"or give --digest sha256:..."
        )
    src_host, src_auth = registry_for(source_cfg)
    src_repo = str(record["repository"]) if record else repository_name(args.flow)
    digest = args.digest or str(record["digest"] if record else "")
    tag = str(record["tag"]) if record else digest.split(":", 1)[1][:12]
    dst_host, dst_auth = registry_for(cfg)
    dst_repo = repository_name(args.flow)
    src = RegistryClient(src_host, auth=src_auth)
    dst = RegistryClient(dst_host, auth=dst_auth)
    copied = copy_image(src, src_repo, digest, dst, dst_repo, tag)
    from release.oci import image_config_labels

    labels = image_config_labels(dst, dst_repo, copied)
    provenance = Provenance(
        flow=args.flow,
        digest=copied,
        source=f"{src_host}/{src_repo}@{digest}",
        destination=f"{dst_host}/{dst_repo}@{copied}",
        source_env=source_env,
        destination_env=cfg.environment,
        labels=labels,
    )
    record_provenance(records_dir(cfg.environment) / "provenance.jsonl", provenance)
    save_record(
        cfg.environment,
        args.flow,
        "push",
        {
            "flow": args.flow,
            "registry": dst_host,
            "repository": dst_repo,
            "tag": tag,
            "digest": copied,
            "reference": f"{dst_host}/{dst_repo}@{copied}",
            "promoted_from": provenance.source,
        },
    )
    print(f"promoted {provenance.source} -> {provenance.destination} (same digest, no rebuild)")
    return 0
