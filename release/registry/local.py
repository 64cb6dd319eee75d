"""The local registry: a JSON file in the git-ignored state folder.

Layout of ``<state>/registry.json``::

    {"flow": {"web_classification": [{"version": "1", "content_hash": "sha256:..", ...}]},
     "data": {...}, "selections": {"web_classification": [{...Selection...}]}}

A registered version also keeps a copy of its content under ``<state>/assets/<kind>/<name>/<version>``
so a release can build exactly what was registered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from release.errors import UserError
from release.registry.base import AssetKind, Registration, Registry, Selection
from release.registry.hashing import EXCLUDED_DIRS, content_hash


class LocalRegistry(Registry):
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "registry"
        self.file = self.root / "registry.json"

    # -- storage ------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if not self.file.is_file():
            return {"flow": {}, "data": {}, "selections": {}}
        try:
            data: dict[str, Any] = json.loads(self.file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.file}: not valid JSON ({exc}); restore or delete it") from None
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(tmp, self.file)  # atomic: never a half-written registry

    # -- registration -------------------------------------------------------------
    def _register(
        self, kind: AssetKind, name: str, path: Path, git_sha: str | None, tags: dict[str, str] | None
    ) -> Registration:
        if not path.exists():
            raise UserError(f"{path}: cannot register {kind} {name!r}: the path does not exist")
        digest = content_hash(path)
        data = self._load()
        versions: list[dict[str, Any]] = data.setdefault(kind, {}).setdefault(name, [])
        if versions and versions[-1]["content_hash"] == digest:
            last = versions[-1]
            return Registration(
                kind, name, last["version"], digest, False, last.get("git_sha"), last.get("tags", {})
            )
        version = str(len(versions) + 1)
        target = self.root / "assets" / kind / name / version
        if target.exists():
            shutil.rmtree(target)
        if path.is_dir():
            shutil.copytree(path, target, ignore=shutil.ignore_patterns(*EXCLUDED_DIRS, "*.pyc"))
        else:
            target.mkdir(parents=True)
            shutil.copy2(path, target / path.name)
        versions.append(
            {
                "version": version,
                "content_hash": digest,
                "git_sha": git_sha,
                "tags": dict(tags or {}),
                "source": str(path),
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        self._save(data)
        return Registration(kind, name, version, digest, True, git_sha, dict(tags or {}))

    def latest(self, kind: AssetKind, name: str) -> Registration | None:
        versions = self._load().get(kind, {}).get(name, [])
        if not versions:
            return None
        last = versions[-1]
        return Registration(
            kind,
            name,
            last["version"],
            last["content_hash"],
            False,
            last.get("git_sha"),
            last.get("tags", {}),
        )

    def asset_path(self, kind: AssetKind, name: str, version: str) -> Path:
        return self.root / "assets" / kind / name / version

    # -- selections ---------------------------------------------------------------
    def record_selection(self, selection: Selection) -> None:
        data = self._load()
        items = data.setdefault("selections", {}).setdefault(selection.flow, [])
        record = dataclasses.asdict(selection)
        if items and all(
            items[-1].get(k) == record[k] for k in ("flow_version", "variant_id", "experiment_run")
        ):
            return  # the same selection again: nothing new to record
        items.append(record)
        self._save(data)

    def baseline(self, flow: str) -> Selection | None:
        items = self._load().get("selections", {}).get(flow, [])
        return Selection(**items[-1]) if items else None
