"""Built-in evaluators of azure-ai-evaluation by name: the one module that calls them.

``experiment.yaml`` evaluators may name one instead of an evaluation flow::

    evaluators:
    - name: answer_f1
      builtin: F1ScoreEvaluator            # also F1Score or f1_score
      datasets:
      - {name: qa_f1, reference: qa, source: data/qa.jsonl,
         mappings: {response: "${run.outputs.answer}", ground_truth: "${data.answer}"}}
    - name: answer_relevance
      builtin: RelevanceEvaluator           # AI-judged: needs a judge model
      judge: {connection: local_openai, model: gpt-35-turbo}
      datasets: [...]

Mappings work as for evaluation flows; their targets are the evaluator's inputs (``response``,
``ground_truth``, ``query``, ``context``). Each evaluated line's scores are the numeric results the
evaluator returns (``f1_score``, ``relevance``, ...); the run's metric is their mean. A judge's
answer that yields no score fails that evaluation line with the evaluator's reason.

Supported (the text form of each evaluator; https://learn.microsoft.com/azure/ai-foundry/concepts/
evaluation-evaluators/): lexical ``F1ScoreEvaluator``, ``RougeScoreEvaluator`` (``init: {rouge_type:
rougeL}``) offline; ``BleuScoreEvaluator``, ``GleuScoreEvaluator``, ``MeteorScoreEvaluator`` only when
the NLTK data they need is installed (azure-ai-evaluation downloads it on first use, which an offline
machine cannot: they are refused before any line runs); AI-judged ``RelevanceEvaluator``,
``SimilarityEvaluator``, ``GroundednessEvaluator``, ``CoherenceEvaluator``, ``FluencyEvaluator``,
``RetrievalEvaluator`` with a ``judge`` (an OpenAI or Azure OpenAI connection of the config).
Safety evaluators need an Azure AI Foundry project and are not offered.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

from release.engine.base import ConnectionSpec, FlowSession, LineFailed, LineOutput
from release.errors import UserError

PACKAGE = "azure-ai-evaluation"
# NLTK resources azure-ai-evaluation's nltk_tokenize needs (azure/ai/evaluation/_common/utils.py)
NLTK_RESOURCES = (
    "corpora/wordnet.zip",
    "misc/perluniprops.zip",
    "tokenizers/punkt.zip",
    "tokenizers/punkt_tab.zip",
)
ROUGE_TYPES = ("rouge1", "rouge2", "rouge3", "rouge4", "rouge5", "rougeL")


@dataclass(frozen=True)
class Builtin:
    """One supported evaluator: its class, inputs (required, optional) and needs."""

    name: str
    inputs: tuple[str, ...]
    optional: tuple[str, ...] = ()
    judged: bool = False  # asks a model (needs ``judge``)
    nltk: bool = False  # needs NLTK data files
    init: tuple[str, ...] = ("threshold",)  # constructor arguments an experiment may set


CATALOG: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin("F1ScoreEvaluator", ("response", "ground_truth")),
        Builtin(
            "RougeScoreEvaluator",
            ("response", "ground_truth"),
            init=("rouge_type", "precision_threshold", "recall_threshold", "f1_score_threshold"),
        ),
        Builtin("BleuScoreEvaluator", ("response", "ground_truth"), nltk=True),
        Builtin("GleuScoreEvaluator", ("response", "ground_truth"), nltk=True),
        Builtin(
            "MeteorScoreEvaluator",
            ("response", "ground_truth"),
            nltk=True,
            init=("alpha", "beta", "gamma", "threshold"),
        ),
        Builtin("RelevanceEvaluator", ("query", "response"), judged=True),
        Builtin("SimilarityEvaluator", ("query", "response", "ground_truth"), judged=True),
        Builtin("GroundednessEvaluator", ("response", "context"), ("query",), judged=True),
        Builtin("CoherenceEvaluator", ("query", "response"), judged=True),
        Builtin("FluencyEvaluator", ("response",), judged=True),
        Builtin("RetrievalEvaluator", ("query", "context"), judged=True),
    )
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removesuffix("evaluator")


_BY_KEY = {_key(name): spec for name, spec in CATALOG.items()}


def lookup(name: str, where: str) -> Builtin:
    """The evaluator ``name`` names (class name, or without ``Evaluator``, or snake case: ``f1_score``)."""
    spec = _BY_KEY.get(_key(name))
    if spec is None:
        raise UserError(
            f"{where}.builtin: {name!r} is not a supported azure-ai-evaluation evaluator; "
            f"supported: {', '.join(CATALOG)}"
        )
    return spec


def nltk_missing() -> list[str]:
    """The NLTK resources the NLTK-based evaluators need that are not installed here."""
    import nltk

    missing = []
    for resource in NLTK_RESOURCES:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(resource)
    return missing


def check(name: str, init: dict[str, Any], judge: object, where: str) -> Builtin:
    """Validate a ``builtin`` evaluator entry before any line runs; returns its catalog entry."""
    spec = lookup(name, where)
    if spec.nltk:
        missing = nltk_missing()
        if missing:
            raise UserError(
                f"{where}.builtin: {spec.name} needs NLTK data that is not installed ({', '.join(missing)}) "
                "and azure-ai-evaluation would try to download it; install it where NLTK looks "
                "(python -m nltk.downloader wordnet perluniprops punkt punkt_tab, or NLTK_DATA) or use "
                "F1ScoreEvaluator / RougeScoreEvaluator, which work offline"
            )
    unknown = sorted(set(init) - set(spec.init))
    if unknown:
        raise UserError(
            f"{where}.init: {spec.name} has no argument(s) {', '.join(unknown)}; "
            f"arguments: {', '.join(spec.init)}"
        )
    if spec.name == "RougeScoreEvaluator" and init.get("rouge_type") not in ROUGE_TYPES:
        raise UserError(
            f"{where}.init.rouge_type: RougeScoreEvaluator needs rouge_type, one of {', '.join(ROUGE_TYPES)}"
        )
    if spec.judged and judge is None:
        raise UserError(
            f"{where}: {spec.name} is AI-judged and needs a judge model: add "
            "'judge: {connection: <connection in config/<env>.yaml>, model: <model or deployment>}'"
        )
    return spec


def package_version() -> str:
    from importlib.metadata import version

    return version(PACKAGE)


def model_config(connection: ConnectionSpec, model: str) -> dict[str, Any]:
    """The judge's model configuration for azure-ai-evaluation, from a config connection."""
    if connection.category == "AzureOpenAI":
        return {
            "type": "azure_openai",
            "azure_endpoint": connection.target,
            "api_key": connection.api_key,
            "azure_deployment": model,
            "api_version": connection.api_version or "2024-10-21",
        }
    if connection.category == "OpenAI":
        return {
            "type": "openai",
            "base_url": connection.target,
            "api_key": connection.api_key,
            "model": model,
        }
    raise UserError(
        f"judge connection {connection.name!r} is a {connection.category} connection; "
        "a judge needs an OpenAI or AzureOpenAI connection"
    )


def _quiet_environment() -> None:
    import os

    # azure-ai-evaluation builds an Azure Monitor exporter: no control-plane or statsbeat calls
    os.environ.setdefault("APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "true")
    os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")


def scores(result: dict[str, Any]) -> dict[str, float]:
    """The scores in an evaluator's result: its numeric values, without thresholds, pass flags
    and the ``<name>_score`` / ``gpt_<name>`` copies of a ``<name>`` score."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key.endswith("_threshold") or key.startswith("gpt_"):
            continue
        if key.endswith("_score") and key.removesuffix("_score") in result:
            continue
        out[key] = float(value)
    return out


class BuiltinEvaluatorSession(FlowSession):
    """Runs one built-in evaluator over evaluation lines (one evaluator instance per thread)."""

    def __init__(self, spec: Builtin, init: dict[str, Any], judge_config: dict[str, Any] | None) -> None:
        _quiet_environment()
        import azure.ai.evaluation as evaluation

        self.spec = spec
        self._class = getattr(evaluation, spec.name)
        kwargs = dict(init)
        if "rouge_type" in kwargs:
            kwargs["rouge_type"] = evaluation.RougeType(kwargs["rouge_type"])
        if judge_config is not None:
            kwargs["model_config"] = judge_config
        self._kwargs = kwargs
        self._local = threading.local()

    def _evaluator(self) -> Any:
        evaluator = getattr(self._local, "evaluator", None)
        if evaluator is None:
            evaluator = self._local.evaluator = self._class(**self._kwargs)
        return evaluator

    def run_line(self, inputs: dict[str, Any], index: int) -> LineOutput:
        wanted = self.spec.inputs + self.spec.optional
        kwargs = {
            k: v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in inputs.items()
            if k in wanted and v is not None
        }
        try:
            result = dict(self._evaluator()(**kwargs))
        except Exception as exc:  # the evaluator's own errors, e.g. a judge that cannot be reached
            message = f"{self.spec.name}: {type(exc).__name__}: {exc}"
            transient = any(word in message for word in ("RateLimit", "Timeout", "APIConnectionError", "429"))
            raise LineFailed(message, retryable=transient) from None
        found = scores(result)
        if not found or any(not math.isfinite(v) for v in found.values()):
            reasons = [str(v) for k, v in result.items() if k.endswith("_reason") and v]
            why = "; ".join(reasons) or "no reason given"
            raise LineFailed(f"{self.spec.name}: no score in the evaluator's result ({why})")
        outputs = {k: v for k, v in result.items() if not (isinstance(v, float) and not math.isfinite(v))}
        return LineOutput(outputs=json.loads(json.dumps(outputs, default=str)), aggregation_inputs=found)

    def aggregate(self, inputs: list[dict[str, Any]], lines: list[LineOutput]) -> dict[str, float]:
        """The mean of each score over the evaluated lines."""
        import numpy as np

        columns: dict[str, list[float]] = {}
        for line in lines:
            for key, value in (line.aggregation_inputs or {}).items():
                columns.setdefault(key, []).append(float(value))
        return {key: round(float(np.mean(values)), 6) for key, values in columns.items() if values}
