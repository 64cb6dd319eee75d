"""Flow image builds and promotion, measured in the same run on the same engine and registry.

* a cold build (``nocache``: every layer rebuilt; the base image and the host's wheel cache
  are ready, as on any machine after its first build);
* the unchanged flow rebuilt from scratch again (``nocache``, a fresh context): the image id
  and the pushed digest must equal the cold build's (reproducible builds);
* a prompt-only change (one prompt file edited) rebuilt with the layer cache.
  Target: rebuild <= 15 % of the cold build;
* promotion (``skopeo copy --preserve-digests`` by digest to another repository, then the
  digest and labels checked) against the push of the same image (the baseline).

    .venv/bin/python bench/build.py [--flow web_classification]

Uses the local environment's Docker engine in ``.genaiops/bench`` (free ports; started and
stopped here unless DOCKER_HOST is set).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release import promotion, skopeo
from release.base_image import base_image_for
from release.config import REPO_ROOT, LocalPorts, LocalSettings, load_config
from release.image import ImageSpec, build_image, image_requirements, used_connections, wheel_cache
from release.image_context import push_image
from release.local_env.environment import LocalEnvironment
from release.local_env.net import free_port

TARGET = 0.15


def bench_environment(components: list[str]) -> LocalEnvironment:
    ports = LocalPorts(registry=free_port(), router=free_port(), model=free_port(), pages=free_port())
    settings = LocalSettings(state_dir=str(REPO_ROOT / ".genaiops" / "bench"), ports=ports)
    env = LocalEnvironment(settings, log=lambda line: print(f"[local] {line}", flush=True))
    env.up(only=components)
    return env


def prompt_file(flow_dir: Path) -> Path:
    for pattern in ("*.jinja2", "*.prompty", "*.txt", "*.md"):
        found = sorted(p for p in flow_dir.glob(pattern) if p.name != "requirements.txt")
        if found:
            return found[0]
    raise SystemExit(f"{flow_dir}: no prompt file to change")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flow", default="web_classification")
    args = parser.parse_args()
    cfg = load_config("local")
    flow_src = REPO_ROOT / cfg.flows[args.flow].path
    env = bench_environment(["docker", "registry"])
    try:
        client = docker.DockerClient(base_url=env.docker_host(), timeout=900)
        t0 = time.monotonic()
        wheel_cache(image_requirements(flow_src))
        wheels_s = time.monotonic() - t0
        with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
            flow_dir = Path(tmp) / args.flow
            shutil.copytree(flow_src, flow_dir)
            spec = ImageSpec(
                flow=args.flow,
                flow_dir=flow_dir,
                repository=f"genaiops-bench/{args.flow.replace('_', '-')}",
                tag="cold",
                base_image=base_image_for(cfg),
                connections=tuple(used_connections(flow_dir, cfg.connections)),
            )
            build_image(client, spec, Path(tmp) / "ctx-warmup")  # base image import, if needed
            cold = build_image(client, spec, Path(tmp) / "ctx-cold", nocache=True)
            again = build_image(
                client, ImageSpec(**{**spec.__dict__, "tag": "again"}), Path(tmp) / "ctx-again", nocache=True
            )
            t0 = time.monotonic()
            pushed = push_image(client, cold.reference, env.registry, "bench/dev", "cold")
            push_s = time.monotonic() - t0
            pushed_again = push_image(client, again.reference, env.registry, "bench/dev", "again")
            t0 = time.monotonic()
            skopeo.copy(pushed.reference, f"{env.registry}/bench/prod:cold")
            source = promotion.SourceImage(env.registry, "bench/dev", pushed.digest, pushed.labels)
            promotion.verify_copy(f"{env.registry}/bench/prod", source)
            promote_s = time.monotonic() - t0
            # the unchanged flow again: the layer chain the cache now serves (for the comparison)
            cached = build_image(client, spec, Path(tmp) / "ctx-cached")
            prompt = prompt_file(flow_dir)
            prompt.write_text(prompt.read_text() + "\nAnswer briefly.\n")
            spec = ImageSpec(**{**spec.__dict__, "tag": "prompt-change"})
            warm = build_image(client, spec, Path(tmp) / "ctx-warm")
        changed = [a != b for a, b in zip(cached.layers, warm.layers, strict=True)]
        ratio = warm.seconds / cold.seconds
        print(f"flow: {args.flow}; prompt changed: {prompt.name}")
        print(f"wheel cache ready in       {wheels_s:7.2f} s (host, once per requirements)")
        print(f"cold build (no cache)      {cold.seconds:7.2f} s  ({len(cold.layers)} layers)")
        same = again.image_id == cold.image_id and pushed_again.digest == pushed.digest
        print(
            f"rebuild unchanged, no cache {again.seconds:5.2f} s  same image id and digest: {same} "
            f"({pushed.digest[:19]})"
        )
        print(f"push to the registry       {push_s:7.2f} s  (baseline)")
        print(f"promotion (skopeo, checked){promote_s:7.2f} s  ratio to push {promote_s / push_s:.2f}")
        print(
            f"rebuild after prompt edit  {warm.seconds:7.2f} s  (changed layers: {sum(changed)}, last: {changed[-1]})"
        )
        print(
            f"ratio rebuild/cold         {ratio:7.3f}  (target <= {TARGET:.2f}: {'PASS' if ratio <= TARGET else 'FAIL'})"
        )
        for ref in {cold.reference, warm.reference, cached.reference, again.reference}:
            client.images.remove(ref, force=True, noprune=True)
        return 0 if ratio <= TARGET and same else 1
    finally:
        env.down()


if __name__ == "__main__":
    sys.exit(main())
