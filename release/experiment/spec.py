"""``experiment.yaml``: the GenAIOps template's format, our additions, and ``experiment.<env>.yaml`` overlays.

Template keys (load unchanged): ``name``, ``flow``, ``connections``, ``datasets`` (``name``, ``source``,
``description``, ``mappings``), ``evaluators`` (``name``, ``flow``, ``datasets`` with ``reference``),
``runtime``. Our additions: ``mode`` (template | grid), ``variants`` (restrict node variants),
``hyperparameters`` (axes), ``concurrency``, ``max_retries``, ``primary_metric``, ``primary_dataset``,
``gates`` and ``connection_overrides``.

Overlays, as the template's loader applies them (``llmops/common/experiment.py``, ``_apply_overlay``,
https://github.com/microsoft/genaiops-promptflow-template): a top-level block of
``experiment.<env>.yaml`` replaces the base file's block whole (``datasets``, ``evaluators``,
``connections``, ``runtime`` and each of our additions); an empty block (``evaluators:``) empties it;
``name`` and ``flow`` always come from the base file. Nothing is merged item by item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from release.config import format_validation_error
from release.errors import UserError
from release.yamlfile import read_mapping

BASE_ONLY = ("name", "flow")  # an overlay never changes these (the template ignores them there)


class ExperimentError(UserError):
    """experiment.yaml is invalid; the message names the file, field and fix."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_mappings(value: Any) -> Any:
    """``mappings:`` left empty means none (the template reads ``ds["mappings"] or {}``)."""
    return {} if value is None else value


class TemplateConnection(BaseModel):
    """A template connection entry. Only the name matters here: the real connection (target and
    secret) comes from config/<env>.yaml; template fields such as api_key are ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    connection_type: str | None = None


class Dataset(_Model):
    """A dataset the flow runs on. ``mappings``: flow input -> ``${data.<column>}`` or a literal value
    (prompt flow's column mapping; an input left out reads the column of its own name)."""

    name: str
    source: str
    description: str | None = None
    mappings: dict[str, Any] = Field(default_factory=dict)
    _mappings = field_validator("mappings", mode="before")(_no_mappings)


class EvaluatorDataset(_Model):
    """The data an evaluator reads for the runs of the dataset ``reference``, line by line.

    As in the template, an entry named after one of the experiment's datasets, without ``source``
    and ``reference``, evaluates the runs of that dataset on its own data.
    ``mappings`` may also use ``${run.outputs.<output>}`` and ``${run.inputs.<column>}`` (the
    referenced run's data line, as prompt flow defines it).
    """

    name: str
    reference: str
    source: str
    description: str | None = None
    mappings: dict[str, Any] = Field(default_factory=dict)
    _mappings = field_validator("mappings", mode="before")(_no_mappings)


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
    flow: str | None = None  # default (template): the evaluator's name, unless it is 'builtin'
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
    request_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # per model call, then retried
    primary_metric: str | None = None
    primary_dataset: str | None = None
    gates: Gates = Gates()
    connection_overrides: dict[str, str] = Field(default_factory=dict)

    # filled by the loader
    base_dir: Path = Path(".")
    file: str = "experiment.yaml"

    @model_validator(mode="before")
    @classmethod
    def _template_defaults(cls, data: Any) -> Any:
        """The template's shorthands: an evaluator's ``flow`` defaults to its name; an evaluator
        dataset named after an experiment dataset (no ``source``/``reference``) is that dataset."""
        if not isinstance(data, dict) or not isinstance(data.get("evaluators"), list):
            return data
        sources = {d.get("name"): d.get("source") for d in data.get("datasets") or [] if isinstance(d, dict)}
        evaluators = []
        for evaluator in data["evaluators"]:
            if isinstance(evaluator, dict):
                evaluator = dict(evaluator)
                if not evaluator.get("flow") and not evaluator.get("builtin") and evaluator.get("name"):
                    evaluator["flow"] = evaluator["name"]
                items = []
                for item in evaluator.get("datasets") or []:
                    if (
                        isinstance(item, dict)
                        and item.get("name") in sources
                        and "source" not in item
                        and "reference" not in item
                    ):
                        item = {**item, "reference": item["name"], "source": sources[item["name"]]}
                    items.append(item)
                if "datasets" in evaluator:
                    evaluator["datasets"] = items
            evaluators.append(evaluator)
        return {**data, "evaluators": evaluators}

    def flow_dir(self) -> Path:
        if self.flow:
            candidates = [self.base_dir / self.flow, self.base_dir / "flows" / self.flow]
        else:  # the template's default: the flow folder named after the experiment
            candidates = [self.base_dir / self.name, self.base_dir / "flows" / self.name, self.base_dir]
        for candidate in candidates:
            if candidate.is_dir() and (
                self.flow or any((candidate / f).is_file() for f in ("flow.dag.yaml", "flow.flex.yaml"))
            ):
                return candidate.resolve()
        raise ExperimentError(
            f"{self.file}: flow: {self.flow or self.name!r}: no such flow folder "
            f"(looked in {', '.join(str(c) for c in candidates)}); "
            "set 'flow' to the folder with flow.dag.yaml"
        )

    def source_path(self, source: str) -> Path:
        """A dataset source: relative to this file, or (the template's fallback) to its ``data/``."""
        path = self.base_dir / source
        if not path.exists() and (self.base_dir / "data" / source).exists():
            path = self.base_dir / "data" / source
        return path.resolve()

    def dataset(self, name: str) -> Dataset:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)


def apply_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """The template's overlay rule: each top-level block of ``overlay`` replaces the base block whole.

    ``name`` and ``flow`` stay the base file's; an empty block (``evaluators:`` with no value)
    empties the block (its default). Blocks the overlay does not name are kept.
    """
    out = dict(base)
    for key, value in overlay.items():
        if key in BASE_ONLY:
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


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
        overlay_data = _overlay(overlay)
        if overlay_data:
            data = apply_overlay(data, overlay_data)
            shown = f"{shown} + {_shown(overlay)}"
    for reserved in ("base_dir", "file"):
        data.pop(reserved, None)
    try:
        return Experiment.model_validate({**data, "base_dir": path.parent.resolve(), "file": shown})
    except ValidationError as exc:
        raise ExperimentError(format_validation_error(shown, exc)) from None


def _overlay(path: Path) -> dict[str, Any]:
    """An overlay file; an empty one (the template ships ``experiment.dev.yaml`` empty) changes nothing."""
    import yaml

    try:
        if yaml.safe_load(path.read_text(encoding="utf-8")) is None:
            return {}
    except yaml.YAMLError:
        pass  # _read names the file and the YAML error
    return _read(path, _shown(path))


def _shown(path: Path) -> str:
    from release.config import REPO_ROOT

    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
