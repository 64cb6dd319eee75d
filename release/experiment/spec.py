"""``experiment.yaml``: the GenAIOps template's format, our additions, and ``experiment.<env>.yaml`` overlays.

Template keys (load unchanged): ``name``, ``flow``, ``connections``, ``datasets`` (``name``, ``source``,
``description``, ``mappings``), ``evaluators`` (``name``, ``flow``, ``datasets`` with ``reference``),
``runtime``. Our additions: ``mode`` (template | grid), ``variants`` (restrict node variants),
``hyperparameters`` (axes), ``concurrency``, ``max_retries``, ``primary_metric``, ``primary_dataset``,
``gates`` and ``connection_overrides``. The overlay is merged over the base file: mappings key by key,
lists of named items by ``name``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from release.config import format_validation_error
from release.errors import UserError
from release.yamlfile import read_mapping

MAPPING_RE = re.compile(r"^\$\{(data|run\.outputs)\.([A-Za-z0-9_.\-]+)\}$")


class ExperimentError(UserError):
    """experiment.yaml is invalid; the message names the file, field and fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateConnection(BaseModel):
    """A template connection entry. Only the name matters here: the real connection (target and
    secret) comes from config/<env>.yaml; template fields such as api_key are ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    connection_type: str | None = None


class Dataset(_Model):
    name: str
    source: str
    description: str | None = None
    mappings: dict[str, str] = Field(default_factory=dict)


class EvaluatorDataset(_Model):
    name: str
    reference: str
    source: str
    description: str | None = None
    mappings: dict[str, str] = Field(default_factory=dict)


class Evaluator(_Model):
    name: str
    flow: str
    datasets: list[EvaluatorDataset]


class Bound(_Model):
    """Limits on a metric: on its value (``min``/``max``) and on its 95 % interval's bounds."""

    min: float | None = None
    max: float | None = None
    min_lower_ci: float | None = None  # the interval's lower bound must be at least this
    max_upper_ci: float | None = None  # the interval's upper bound must be at most this


class Regression(_Model):
    """Fail when the chosen variant is significantly worse than the baseline (at ``Gates.alpha``)
    by more than ``tolerance``."""

    metrics: list[str] = Field(default_factory=list)
    tolerance: Annotated[float, Field(ge=0)] = 0.0


class Gates(_Model):
    thresholds: dict[str, Bound] = Field(default_factory=dict)
    regression: Regression | None = None
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05  # significance level of the paired tests
    allow_contamination: bool = False
    contamination_reason: str | None = None

    @model_validator(mode="after")
    def _reason_for_contamination(self) -> Gates:
        if self.allow_contamination and not (self.contamination_reason or "").strip():
            raise ValueError(
                "allow_contamination: true needs contamination_reason: say why evaluating on "
                "text the flow contains is acceptable"
            )
        return self


class Experiment(_Model):
    # -- the template's keys
    name: str
    flow: str | None = None
    connections: list[TemplateConnection] = Field(default_factory=list)
    datasets: list[Dataset] = Field(min_length=1)
    evaluators: list[Evaluator] = Field(default_factory=list)
    runtime: str | None = None
    # -- our additions
    mode: Literal["template", "grid"] = "template"
    variants: dict[str, list[str]] = Field(default_factory=dict)
    hyperparameters: dict[str, list[Any]] = Field(default_factory=dict)
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    max_retries: Annotated[int, Field(ge=0, le=20)] = 5
    primary_metric: str | None = None
    primary_dataset: str | None = None
    gates: Gates = Gates()
    connection_overrides: dict[str, str] = Field(default_factory=dict)

    # filled by the loader
    base_dir: Path = Path(".")
    file: str = "experiment.yaml"

    def flow_dir(self) -> Path:
        candidates = [self.base_dir / (self.flow or ".")]
        if self.flow:
            candidates.append(self.base_dir / "flows" / self.flow)
        else:
            candidates.append(self.base_dir / "flows" / self.name)
        for candidate in candidates:
            if candidate.is_dir():
                return candidate.resolve()
        raise ExperimentError(
            f"{self.file}: flow: {self.flow or self.name!r}: no such flow folder "
            f"(looked in {', '.join(str(c) for c in candidates)}); "
            "set 'flow' to the folder with flow.dag.yaml"
        )

    def source_path(self, source: str) -> Path:
        return (self.base_dir / source).resolve()

    def dataset(self, name: str) -> Dataset:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)


def merge(base: Any, overlay: Any) -> Any:
    """Overlay merge: mappings key by key, lists of named mappings by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(overlay, list)
        and all(isinstance(i, dict) and "name" in i for i in base + overlay)
    ):
        merged = {i["name"]: i for i in base}
        for item in overlay:
            merged[item["name"]] = merge(merged[item["name"]], item) if item["name"] in merged else item
        return list(merged.values())
    return overlay


def _read(path: Path, shown: str) -> dict[str, Any]:
    return read_mapping(path, shown, ExperimentError, "a mapping with at least 'name' and 'datasets'")


def load_experiment(path: Path, env: str | None = None) -> Experiment:
    """Load ``path`` and, when it exists, the overlay ``experiment.<env>.yaml`` next to it."""
    shown = _shown(path)
    if not path.is_file():
        raise ExperimentError(f"{shown}: no such experiment file; create it (see docs/experiments.md)")
    data = _read(path, shown)
    overlay = path.with_name(f"{path.stem}.{env}{path.suffix}") if env else None
    if overlay is not None and overlay.is_file():
        data = merge(data, _read(overlay, _shown(overlay)))
        shown = f"{shown} + {_shown(overlay)}"
    for reserved in ("base_dir", "file"):
        data.pop(reserved, None)
    try:
        return Experiment.model_validate({**data, "base_dir": path.parent.resolve(), "file": shown})
    except ValidationError as exc:
        raise ExperimentError(format_validation_error(shown, exc)) from None


def _shown(path: Path) -> str:
    from release.config import REPO_ROOT

    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
