"""The Azure ML registry: flows as models, datasets as data assets (azure-ai-ml).

A new version is created only when the content hash changed: the hash is kept in the version's
tags and properties (``genaiops.content_hash``) and compared with the latest version's, so a
second registration of the same content sends no PUT. New content is uploaded first to a
content-addressed path of the workspace datastore (``genaiops/<kind>/<name>/<hash>/``), then the
version points at it. The gate's selection is kept as a tag of the flow's model version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Data, Model

from release.azure.clients import AzureContext, find, must
from release.azure.storage import upload
from release.config import EnvironmentConfig
from release.errors import UserError
from release.registry.base import AssetKind, Registration, Registry, Selection
from release.registry.hashing import content_hash

log = logging.getLogger(__name__)

HASH_KEY = "genaiops.content_hash"
GIT_KEY = "genaiops.git_sha"
SELECTION_KEY = "genaiops.selection"
_OWN_KEYS = (HASH_KEY, GIT_KEY, SELECTION_KEY)


def _version_key(version: str | None) -> tuple[int, str]:
    text = str(version or "")
    return (int(text), "") if text.isdigit() else (-1, text)


def asset_name(name: str) -> str:
    """Azure ML asset names: letters, digits, '-', '_' (flow names are already like that)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise UserError(f"asset name {name!r}: use letters, digits, '-', '_' or '.'")
    return name


class AzureMLRegistry(Registry):
    def __init__(self, cfg: EnvironmentConfig, ctx: AzureContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or AzureContext.from_config(cfg)
        self._ml: MLClient | None = None

    @classmethod
    def from_config(cls, cfg: EnvironmentConfig) -> AzureMLRegistry:
        return cls(cfg)

    @property
    def ml(self) -> MLClient:
        if self._ml is None:
            self._ml = self.ctx.ml_client()
        return self._ml

    # -- reading ------------------------------------------------------------------------
    def _versions(self, kind: AssetKind, name: str) -> list[Any]:
        ops: Any = self.ml.models if kind == "flow" else self.ml.data
        found = find(f"list versions of {kind} {name}", lambda: list(ops.list(name=name)))
        return sorted(found or [], key=lambda a: _version_key(a.version))

    def _registration(self, kind: AssetKind, asset: Any, created: bool) -> Registration:
        tags = dict(asset.tags or {})
        props = dict(getattr(asset, "properties", None) or {})
        digest = props.get(HASH_KEY) or tags.get(HASH_KEY, "")
        git_sha = tags.get(GIT_KEY) or None
        user_tags = {k: v for k, v in tags.items() if k not in _OWN_KEYS}
        return Registration(kind, asset.name, str(asset.version), digest, created, git_sha, user_tags)

    def latest(self, kind: AssetKind, name: str) -> Registration | None:
        versions = self._versions(kind, asset_name(name))
        return self._registration(kind, versions[-1], False) if versions else None

    # -- registration -------------------------------------------------------------------
    def _register(
        self, kind: AssetKind, name: str, path: Path, git_sha: str | None, tags: dict[str, str] | None
    ) -> Registration:
        asset_name(name)
        if not path.exists():
            raise UserError(f"{path}: cannot register {kind} {name!r}: the path does not exist")
        digest = content_hash(path)
        versions = self._versions(kind, name)
        if versions:
            last = self._registration(kind, versions[-1], False)
            if last.content_hash == digest:
                log.info("%s %s: content unchanged, version %s reused", kind, name, last.version)
                return last
        next_version = str(max([_version_key(v.version)[0] for v in versions] + [0]) + 1)
        hexdigest = digest.split(":", 1)[-1]
        uploaded = upload(self.ctx, self.ml, path, f"genaiops/{kind}/{name}/{hexdigest}")
        all_tags = {**(tags or {}), HASH_KEY: digest}
        if git_sha:
            all_tags[GIT_KEY] = git_sha
        properties = {HASH_KEY: digest}
        asset: Data | Model
        if kind == "flow":
            properties["is-promptflow"] = "true"
            asset = Model(
                name=name,
                version=next_version,
                type=AssetTypes.CUSTOM_MODEL,
                path=uploaded.uri,
                tags=all_tags,
                properties=properties,
                description=f"prompt flow {name} ({digest})",
            )
            result = must(f"register flow {name}", lambda: self.ml.models.create_or_update(asset))  # type: ignore[arg-type]
        else:
            asset = Data(
                name=name,
                version=next_version,
                type=AssetTypes.URI_FILE if path.is_file() else AssetTypes.URI_FOLDER,
                path=uploaded.uri,
                tags=all_tags,
                properties=properties,
                description=f"dataset {name} ({digest})",
            )
            result = must(f"register dataset {name}", lambda: self.ml.data.create_or_update(asset))  # type: ignore[arg-type]
        log.info("%s %s: registered version %s (%d files)", kind, name, result.version, uploaded.files)
        return self._registration(kind, result, True)

    # -- selections (the release baseline) ------------------------------------------------
    def record_selection(self, selection: Selection) -> None:
        model = find(
            f"get flow {selection.flow} version {selection.flow_version}",
            lambda: self.ml.models.get(selection.flow, version=selection.flow_version),
        )
        if model is None:
            raise UserError(
                f"flow {selection.flow} version {selection.flow_version} is not registered in "
                f"workspace {self.ctx.workspace}; register the flow before recording the gate's choice"
            )
        model.tags = {
            **(model.tags or {}),
            SELECTION_KEY: json.dumps(dataclasses.asdict(selection), sort_keys=True),
        }
        must(f"record selection on {selection.flow}", lambda: self.ml.models.create_or_update(model))

    def baseline(self, flow: str) -> Selection | None:
        for model in reversed(self._versions("flow", asset_name(flow))):
            raw = (model.tags or {}).get(SELECTION_KEY)
            if raw:
                return Selection(**json.loads(raw))
        return None
