"""``genaiops build | push | promote``: flow images, registries and promotion by digest.

* ``build --flow F --env E``: our Dockerfile, the docker SDK, labels (git sha, flow hash,
  registered version, variant); records ``<images>/<env>/<flow>.build.json``.
* ``push --flow F --env E``: the local registry for ``local``, ACR (Azure AD token exchange,
  never the admin user) for Azure environments; records the digest in ``<flow>.push.json``.
* ``promote --flow F --from dev --to prod [--commit SHA]``: finds, in the registry named by
  the source environment's push record, the image whose labels carry the commit being promoted
  (git sha and flow hash), copies it by digest (ACR import between Azure registries, skopeo
  otherwise; no rebuild), checks digest and labels at the destination and records provenance.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from release.base_image import base_image_for
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
    registry_resource_id,
    repository_name,
)
from release.registry.hashing import content_hash

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    build = sub.add_parser("build", help="build the flow's OCI image (our Dockerfile, docker SDK)")
    add_env(build)
    add_flow(build)
    build.add_argument("--tag", default=None, help="image tag (default: <version>-<flow hash>)")
    build.add_argument(
        "--base-image",
        default=None,
        help="BASE_IMAGE (default: $GENAIOPS_BASE_IMAGE, local.base_image, else the pinned official "
        "python image on Azure environments and the bootstrapped Debian one on local)",
    )
    build.add_argument("--version", dest="flow_version", default=None, help="registered flow version label")
    build.add_argument("--variant", default=None, help="chosen variant id label")
    build.set_defaults(handler=_build)

    push = sub.add_parser("push", help="push the built image to the environment's registry")
    add_env(push)
    add_flow(push)
    push.add_argument("--image", default=None, help="local image reference (default: the last build)")
    push.set_defaults(handler=_push)

    promote = sub.add_parser(
        "promote", help="copy the image gated for this commit from the source environment (by digest)"
    )
    add_env(promote)
    add_flow(promote)
    promote.add_argument(
        "--to", dest="env", default=argparse.SUPPRESS, help="target environment (same as --env)"
    )
    promote.add_argument("--from", dest="source", default=None, help="source environment (default: previous)")
    promote.add_argument(
        "--commit",
        default=None,
        help="git sha whose gated image to promote (default: HEAD of this checkout)",
    )
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
        base_image=base_image_for(cfg, args.base_image),
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
    from release import promotion, skopeo
    from release.git import git_sha

    cfg = load_config(args.env)
    settings = flow_settings(cfg, args.flow)
    source_env = args.source or previous_environment(cfg.environment)
    if source_env == cfg.environment:
        raise UserError(f"--from {source_env} --to {cfg.environment}: promote between two environments")
    record = load_record(source_env, args.flow, "push")
    if record is None:
        raise UserError(
            f"environment {source_env!r} has no push record of {args.flow!r} "
            f"({records_dir(source_env) / (args.flow + '.push.json')}); release it there first, or "
            "download the source run's image records into that folder"
        )
    commit = args.commit or git_sha()
    if not commit:
        raise UserError(
            "no git commit to promote: run inside the checkout being released or give --commit <sha>"
        )
    flow_dir = (REPO_ROOT / settings.path).resolve()
    expected = promotion.Expected(flow=args.flow, revision=commit, flow_hash=content_hash(flow_dir))

    src_auth = _source_auth(str(record["registry"]), cfg)
    src_credentials = [src_auth.credentials()] if src_auth else []
    source = promotion.find_gated_image(record, expected, src_credentials, source_env)
    dst_host, dst_auth = registry_for(cfg)
    credentials = src_credentials + ([dst_auth.credentials()] if dst_auth else [])
    dst_repo = repository_name(args.flow)
    tag = str(record.get("tag") or source.digest.split(":", 1)[1][:12])
    tags = [tag, promotion.revision_tag(source.labels[promotion.REVISION_LABEL])]
    destination = f"{dst_host}/{dst_repo}"
    started = time.monotonic()
    if cfg.kind == "azure" and source.resource_id:
        from release.azure.acr import ImportRequest, import_image, registry_name
        from release.azure.clients import AzureContext

        method = "acr-import"
        import_image(
            AzureContext.from_config(cfg),
            ImportRequest(
                source_resource_id=source.resource_id,
                source_image=f"{source.repository}@{source.digest}",
                target_registry=registry_name(dst_host),
                target_tags=tuple(f"{dst_repo}:{t}" for t in tags),
            ),
        )
    else:
        method = "skopeo"
        for name in tags:
            skopeo.copy(source.reference, f"{destination}:{name}", credentials)
    promotion.verify_copy(destination, source, credentials)
    seconds = time.monotonic() - started
    provenance = promotion.Provenance(
        flow=args.flow,
        digest=source.digest,
        source=source.reference,
        destination=f"{destination}@{source.digest}",
        source_env=source_env,
        destination_env=cfg.environment,
        method=method,
        labels=source.labels,
    )
    promotion.record_provenance(records_dir(cfg.environment) / "provenance.jsonl", provenance)
    save_record(
        cfg.environment,
        args.flow,
        "push",
        {
            "flow": args.flow,
            "registry": dst_host,
            "registry_resource_id": registry_resource_id(cfg),
            "repository": dst_repo,
            "tag": tag,
            "digest": source.digest,
            "reference": provenance.destination,
            "labels": source.labels,
            "promoted_from": provenance.source,
        },
    )
    print(
        f"promoted {provenance.source} -> {provenance.destination} by {method} in {seconds:.1f} s "
        f"(commit {commit[:12]}, same digest, labels checked, no rebuild)"
    )
    return 0


def _source_auth(registry: str, target: EnvironmentConfig) -> Any:
    """ACR sign-in for a source registry read from a push record (``*.azurecr.io``), else None."""
    if not registry.endswith(".azurecr.io"):
        return None
    from release.azure.acr import AcrAuth
    from release.azure.clients import default_credential

    tenant = target.azure.tenant_id if target.azure else None
    return AcrAuth(registry, default_credential(), tenant_id=tenant)
