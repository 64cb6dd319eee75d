"""Promotion: which image to copy, how, and the checks after. The copying is done by the
registry platform (ACR import) or by skopeo; this module only decides and verifies.

1. **What was gated.** The target environment promotes one commit: its git sha
   (``org.opencontainers.image.revision``) and the content hash of the flow at that commit
   (``ai.genaiops.flow-hash``). :func:`find_gated_image` looks in the source registry named
   by the source environment's push record (``registry``, ``repository``; never recomputed
   from config) for the image whose labels carry both: first the recorded digest, then the
   ``rev-<sha>`` tag that every push adds, then tags that carry the flow hash. None found is
   a :class:`PromotionError` that says what was found instead.
2. **Copy by digest.** :func:`copy_plan` picks ACR import (server side, by the source
   registry's resource id) when both ends are Azure registries with a recorded resource id,
   skopeo otherwise (``--preserve-digests``).
3. **Check after.** :func:`verify_copy` reads the destination by digest: the same digest and
   the same labels, or a :class:`PromotionError`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from release import skopeo
from release.errors import UserError

REVISION_LABEL = "org.opencontainers.image.revision"
FLOW_HASH_LABEL = "ai.genaiops.flow-hash"
MAX_CANDIDATES = 20  # images inspected while looking for the gated one (bounded)


class PromotionError(UserError):
    """No image matches what is being promoted, or a copy did not arrive intact."""


def revision_tag(revision: str) -> str:
    """The extra tag every push adds, so that each commit's image stays findable."""
    return f"rev-{revision[:12]}"


@dataclass(frozen=True)
class Expected:
    """What the target environment promotes: a flow at one commit."""

    flow: str
    revision: str  # full git sha (a 7+ hex prefix is accepted)
    flow_hash: str  # release.registry.hashing.content_hash of the flow folder

    def mismatches(self, labels: dict[str, str]) -> list[str]:
        found_rev = labels.get(REVISION_LABEL, "")
        wrong = []
        if not found_rev or not (found_rev.startswith(self.revision) or self.revision.startswith(found_rev)):
            wrong.append(f"revision {found_rev or '(none)'} != {self.revision}")
        if labels.get(FLOW_HASH_LABEL) != self.flow_hash:
            wrong.append(f"flow hash {labels.get(FLOW_HASH_LABEL) or '(none)'} != {self.flow_hash}")
        return wrong


@dataclass(frozen=True)
class SourceImage:
    registry: str
    repository: str
    digest: str
    labels: dict[str, str]
    resource_id: str | None = None  # the source registry's ARM id (ACR import)

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"


def find_gated_image(
    record: dict[str, Any],
    expected: Expected,
    credentials: list[skopeo.Credentials] | None = None,
    source_env: str = "dev",
) -> SourceImage:
    """The image in the push record's repository whose labels match ``expected``."""
    for key in ("registry", "repository", "digest"):
        if not record.get(key):
            raise PromotionError(
                f"the push record of {expected.flow!r} in {source_env!r} has no {key!r}; "
                f"push it again with 'genaiops push --flow {expected.flow} --env {source_env}'"
            )
    registry, repository = str(record["registry"]), str(record["repository"])
    base = f"{registry}/{repository}"
    seen: dict[str, str] = {}

    def candidates() -> list[str]:
        refs = [f"{base}@{record['digest']}", f"{base}:{revision_tag(expected.revision)}"]
        hash_part = expected.flow_hash.split(":")[-1][:12]
        tags = skopeo.list_tags(base, credentials)
        refs += [f"{base}:{t}" for t in sorted(tags, reverse=True) if hash_part in t]
        return refs

    for ref in candidates()[:MAX_CANDIDATES]:
        try:
            info = skopeo.inspect(ref, credentials)
        except skopeo.RegistryError:
            continue  # e.g. no rev- tag for this commit
        if info.digest in seen:
            continue
        wrong = expected.mismatches(info.labels)
        seen[info.digest] = "; ".join(wrong) or "match"
        if not wrong:
            return SourceImage(
                registry=registry,
                repository=repository,
                digest=info.digest,
                labels=info.labels,
                resource_id=record.get("registry_resource_id") or None,
            )
    found = "; ".join(f"{d[:19]}: {why}" for d, why in seen.items()) or "no image"
    raise PromotionError(
        f"no image of flow {expected.flow!r} in {base} (push record of {source_env!r}) carries "
        f"revision {expected.revision[:12]} and flow hash {expected.flow_hash[:19]}; found: {found}. "
        f"Release that commit in {source_env!r} first (its gate, build and push), or promote the "
        "commit that was gated with --commit <sha>"
    )


def verify_copy(
    destination: str,
    source: SourceImage,
    credentials: list[skopeo.Credentials] | None = None,
) -> skopeo.ImageInfo:
    """Read ``destination`` (``host/repo``) at the source digest: same digest, same labels."""
    info = skopeo.inspect(f"{destination}@{source.digest}", credentials)
    if info.digest != source.digest:
        raise PromotionError(f"{destination} holds {info.digest} after the copy, expected {source.digest}")
    if info.labels != source.labels:
        changed = sorted(
            k for k in {*info.labels, *source.labels} if info.labels.get(k) != source.labels.get(k)
        )
        raise PromotionError(f"{destination}@{source.digest}: labels differ from the source's: {changed}")
    return info


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    flow: str
    digest: str
    source: str  # registry/repo@digest it was copied from
    destination: str  # registry/repo@digest it now lives at
    source_env: str
    destination_env: str
    method: str = ""  # "acr-import" | "skopeo"
    labels: dict[str, str] = field(default_factory=dict)
    at: str = ""  # UTC ISO time


def record_provenance(path: Path, record: Provenance) -> Path:
    """Append one promotion record (JSON line) to ``path``; never holds a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(record)
    if not data["at"]:
        data["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(data, sort_keys=True) + "\n")
    return path


def read_provenance(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
