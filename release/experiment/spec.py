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


class Judge(_Model):
    """The model an AI-judged built-in evaluator asks: a connection of config/<env>.yaml and the
    model (OpenAI) or deployment (Azure OpenAI) name behind it."""

    connection: str
    model: str


class Evaluator(_Model):
    """An evaluation flow (``flow``: a folder) or a built-in evaluator of azure-ai-evaluation
    (``builtin``: e.g. ``F1ScoreEvaluator``; ``init``: its constructor arguments; ``judge``: the model of
    an AI-judged one). See release/experiment/builtin_evaluators.py."""

    name: str
    flow: str | None = None
    builtin: str | None = None
    init: dict[str, Any] = Field(default_factory=dict)
    judge: Judge | None = None
    datasets: list[EvaluatorDataset]

    @model_validator(mode="after")
    def _flow_or_builtin(self) -> Evaluator:
        if (self.flow is None) == (self.builtin is None):
            raise ValueError(
                "give either 'flow' (an evaluation flow folder) or 'builtin' (an azure-ai-evaluation "
                "evaluator such as F1ScoreEvaluator), not both or neither"
            )
        if self.flow is not None and (self.init or self.judge is not None):
            raise ValueError("'init' and 'judge' are for 'builtin' evaluators only")
        return self


class Bound(_Model):
    min: float | None = None
    max: float | None = None


class Regression(_Model):
    metrics: list[str] = Field(default_factory=list)
    tolerance: Annotated[float, Field(ge=0)] = 0.0


class Gates(_Model):
    thresholds: dict[str, Bound] = Field(default_factory=dict)
    regression: Regression | None = None


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
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # per model call, then retried
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
