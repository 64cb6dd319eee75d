"""Contamination check: literal text of a flow (few-shot examples, prompts) that also appears in
its evaluation datasets, exactly or nearly.

A flow evaluated on lines it was shown as examples scores higher than it will in production.
Before a flow is evaluated, every text the flow carries is compared with every text value of
every dataset the experiment evaluates on:

* flow texts: each line of its prompt templates (``*.jinja2``, ``*.prompty``, ``*.j2``) with
  template tags removed, and each string literal of its Python code (``*.py``, read with ``ast``;
  f-string constant parts count). Evaluator flows, ``data/`` and caches are not the flow.
* dataset texts: each string value of each line of each dataset file (all columns) with at least
  :data:`MIN_WORDS` words (shorter values are labels such as ``billing``).

Both are normalized (Unicode NFKC, lower case, every run of non-alphanumerics one space). A pair
is a hit when

* ``exact``: the normalized dataset text occurs in the normalized flow text (or the other way
  round), on word boundaries; or
* ``near``: their word-level similarity is at least :data:`NEAR_RATIO`: the larger of the
  ``difflib.SequenceMatcher`` ratio over the word lists (copies with small edits,
  https://docs.python.org/3/library/difflib.html#difflib.SequenceMatcher.ratio) and the overlap
  coefficient of the word sets, ``|A & B| / min(|A|, |B|)`` (reordered copies; Szymkiewicz-Simpson).

Candidates are found through shared word 2-grams first, so a 10,000-line dataset does not cost
10,000 comparisons per flow text. Paraphrases that share few words are not found: no string
measure finds them; keep examples on topics the datasets do not cover.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from release.experiment.spec import Experiment

MIN_WORDS = 4
NEAR_RATIO = 0.6
MAX_TEXT_CHARS = 2000  # longer texts are compared by exact containment only
PROMPT_SUFFIXES = (".jinja2", ".j2", ".prompty")
SKIP_DIRS = {"data", "__pycache__", ".promptflow", ".runs", "node_modules", ".git"}
_NON_WORD = re.compile(r"[^0-9a-z]+")
_TEMPLATE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


@dataclass(frozen=True)
class Hit:
    """One flow text that matches one dataset text."""

    kind: str  # "exact" | "near"
    similarity: float  # 1.0 for exact
    flow_file: str  # relative to the flow folder
    flow_line: int
    flow_text: str
    dataset: str
    dataset_file: str
    dataset_line: int  # 1-based line of the dataset file
    column: str
    dataset_text: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.kind} ({self.similarity:.2f}): {self.flow_file}:{self.flow_line} "
            f"{_short(self.flow_text)!r} ~ {self.dataset_file}:{self.dataset_line} "
            f"[{self.column}] {_short(self.dataset_text)!r} (dataset {self.dataset})"
        )


@dataclass(frozen=True)
class _Text:
    origin: str
    line: int
    text: str
    words: tuple[str, ...]


def normalize(text: str) -> str:
    """NFKC, lower case, non-alphanumeric runs to one space, trimmed."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _python_strings(path: Path) -> Iterator[tuple[int, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _template_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, _TEMPLATE_TAG.sub(" ", line)


def flow_texts(flow_dir: Path, exclude: Iterable[Path] = ()) -> list[tuple[str, int, str]]:
    """(file relative to ``flow_dir``, line, text) of every prompt line and Python string literal."""
    skipped = [p.resolve() for p in exclude]
    out: list[tuple[str, int, str]] = []
    for path in sorted(flow_dir.rglob("*")):
        relative = path.relative_to(flow_dir)
        if not path.is_file() or any(part in SKIP_DIRS for part in relative.parts[:-1]):
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(s) for s in skipped):
            continue
        if path.suffix == ".py" or path.name.endswith(".py.tmpl"):
            texts: Iterable[tuple[int, str]] = _python_strings(path)
        elif path.suffix in PROMPT_SUFFIXES:
            texts = _template_lines(path)
        else:
            continue
        out += [(str(relative), line, text) for line, text in texts if text.strip()]
    return out


def _prepare(origin: str, line: int, text: str) -> _Text | None:
    norm = normalize(text)
    words = tuple(norm.split())
    if len(words) < MIN_WORDS:
        return None
    return _Text(origin, line, norm, words)


def similarity(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """The larger of the word-order ratio (``difflib``) and the word-set overlap coefficient
    ``|A & B| / min(|A|, |B|)`` (which finds reordered copies): 0 (nothing shared) to 1."""
    ordered = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    set_a, set_b = set(a), set(b)
    overlap = len(set_a & set_b) / min(len(set_a), len(set_b))
    return max(ordered, overlap)


def _bigrams(words: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(words))


def _contains(outer: str, inner: str) -> bool:
    return f" {inner} " in f" {outer} "


def find_hits(
    flow_dir: Path,
    datasets: list[tuple[str, Path, list[dict[str, Any]]]],
    exclude: Iterable[Path] = (),
    near_ratio: float = NEAR_RATIO,
) -> list[Hit]:
    """Every (flow text, dataset text) pair that is an exact or near match.

    ``datasets``: (dataset name, file, rows as read). ``exclude``: folders inside ``flow_dir`` that
    are not the flow (its evaluators). Hits are ordered by flow file and line, then dataset line."""
    flow: list[tuple[_Text, str]] = []
    for file, line, raw in flow_texts(flow_dir, exclude):
        prepared = _prepare(file, line, raw)
        if prepared is not None:
            flow.append((prepared, raw))
    rows: list[tuple[_Text, str, str, str, str]] = []  # text, raw, dataset, file, column
    index: dict[tuple[str, str], list[int]] = {}
    seen: set[tuple[str, str]] = set()
    for name, path, data in datasets:
        if (str(path), name) in seen:
            continue
        seen.add((str(path), name))
        for number, row in enumerate(data, start=1):
            for column, value in row.items():
                if not isinstance(value, str):
                    continue
                prepared = _prepare(path.name, number, value)
                if prepared is None:
                    continue
                position = len(rows)
                rows.append((prepared, value, name, path.name, column))
                for gram in _bigrams(prepared.words):
                    index.setdefault(gram, []).append(position)
    hits: list[Hit] = []
    found: set[tuple[str, int, str, int, str]] = set()
    for text, raw in flow:
        candidates: dict[int, int] = {}
        for gram in _bigrams(text.words):
            for position in index.get(gram, ()):
                candidates[position] = candidates.get(position, 0) + 1
        for position in sorted(candidates):
            data_text, data_raw, dataset, file, column = rows[position]
            if _contains(text.text, data_text.text) or _contains(data_text.text, text.text):
                kind, ratio = "exact", 1.0
            elif len(text.text) > MAX_TEXT_CHARS or len(data_text.text) > MAX_TEXT_CHARS:
                continue
            else:
                ratio = similarity(text.words, data_text.words)
                if ratio < near_ratio:
                    continue
                kind = "near"
            key = (text.origin, text.line, file, data_text.line, column)
            if key in found:
                continue
            found.add(key)
            hits.append(
                Hit(
                    kind,
                    round(ratio, 4),
                    text.origin,
                    text.line,
                    raw.strip(),
                    dataset,
                    file,
                    data_text.line,
                    column,
                    data_raw,
                )
            )
    return sorted(hits, key=lambda h: (h.flow_file, h.flow_line, h.dataset_file, h.dataset_line))


def check_experiment(experiment: Experiment) -> list[Hit]:
    """Every hit of the experiment's flow against every dataset it runs or evaluates on."""
    from release.experiment.plan import read_rows

    flow_dir = experiment.flow_dir()
    # built-in evaluators (azure-ai-evaluation) have no folder of the project's own
    evaluators = [(experiment.base_dir / e.flow).resolve() for e in experiment.evaluators if e.flow]
    sources: dict[Path, str] = {}
    for dataset in experiment.datasets:
        sources.setdefault(experiment.source_path(dataset.source), dataset.name)
    for evaluator in experiment.evaluators:
        for item in evaluator.datasets:
            sources.setdefault(experiment.source_path(item.source), item.name)
    datasets = [
        (name, path, read_rows(path, f"{experiment.file}: dataset {name}", None))
        for path, name in sources.items()
        if path.is_file()
    ]
    return find_hits(flow_dir, datasets, exclude=evaluators)
