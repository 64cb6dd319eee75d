"""The registry interface: flows and datasets get a new version only when their content changed.

Two implementations: :mod:`release.registry.local` (the ``local`` environment, a JSON file in
the state folder) and the Azure ML registry (data assets and models through ``azure-ai-ml``).
Both use :func:`release.registry.hashing.content_hash`, so a version is created exactly when
the sorted relative paths or bytes of the content changed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

AssetKind = Literal["flow", "data"]


@dataclass(frozen=True)
class Registration:
    """One registered version of a flow or dataset."""

    kind: AssetKind
    name: str
    version: str
    content_hash: str
    created: bool  # False: the content was unchanged and the existing version is reused
    git_sha: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """What the gate chose for a release: the best variant of a flow version, with its metrics."""

    flow: str
    flow_version: str
    variant_id: str  # e.g. "summarize_text_content=variant_1,temperature=0.2"
    variant: dict[str, Any]  # {"variants": {node: variant}, "params": {...}}
    metrics: dict[str, float]  # primary dataset's aggregated metrics of the chosen variant
    experiment_run: str
    git_sha: str | None = None


class Registry(ABC):
    """Registers flows and datasets by content hash and records gate selections."""

    def register_flow(
        self, name: str, path: Path, *, git_sha: str | None = None, tags: dict[str, str] | None = None
    ) -> Registration:
        """Register ``path`` (a flow folder) as ``name``; a new version only when its hash changed."""
        return self._register("flow", name, path, git_sha, tags)

    def register_data(
        self, name: str, path: Path, *, git_sha: str | None = None, tags: dict[str, str] | None = None
    ) -> Registration:
        """Register ``path`` (a dataset file or folder); a new version only when its hash changed."""
        return self._register("data", name, path, git_sha, tags)

    @abstractmethod
    def _register(
        self, kind: AssetKind, name: str, path: Path, git_sha: str | None, tags: dict[str, str] | None
    ) -> Registration:
        """Hash ``path``; create version N+1 only when the hash differs from the latest version's."""

    @abstractmethod
    def latest(self, kind: AssetKind, name: str) -> Registration | None:
        """The newest registered version, or None."""

    @abstractmethod
    def record_selection(self, selection: Selection) -> None:
        """Record the gate's chosen variant and metrics for a flow version (the release baseline).

        Recording the same selection (flow version, variant, experiment run) twice is a no-op."""

    @abstractmethod
    def baseline(self, flow: str) -> Selection | None:
        """The last recorded selection of ``flow`` (what production runs), or None."""
