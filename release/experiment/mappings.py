"""Column mappings (``mappings:`` of a dataset or evaluator dataset), as prompt flow applies them.

Rules of prompt flow 1.18.5 (``promptflow/_utils/inputs_mapping_utils.py``,
``promptflow/batch/_batch_inputs_processor.py``, ``_sdk/_orchestrator/run_submitter.py``;
https://microsoft.github.io/promptflow/how-to-guides/run-and-evaluate-a-flow/use-column-mapping.html):

* ``${data.<column>}``: that column of the line being run (or evaluated);
* ``${run.outputs.<output>}`` (evaluators): that output of the referenced run's line;
* ``${run.inputs.<column>}`` (evaluators): that column of the referenced run's *data* line (prompt
  flow: "run.inputs should refer to original data", not the flow inputs after mapping);
* any other value is a literal: a non-string value, or a string that is not one ``${...}``;
* any other ``${...}`` is an error ("Couldn't find these mapping relations");
* a flow input with no mapping and no default value reads ``${data.<input>}`` (the default
  mapping); an input with a default value keeps its default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

REFERENCE_RE = re.compile(r"^\$\{([^{}]+)\}$")  # prompt flow's own pattern
SOURCES = ("data", "run.outputs", "run.inputs")
RUN_SOURCES = ("run.outputs", "run.inputs")


@dataclass(frozen=True)
class Reference:
    source: str  # "data" | "run.outputs" | "run.inputs"
    name: str  # the column or output name (may contain dots and spaces)


def parse(expression: Any) -> Reference | None:
    """The reference in ``expression``, or None for a literal value.

    Raises ValueError (a message without the location) for a ``${...}`` that names no known source.
    """
    if not isinstance(expression, str):
        return None
    match = REFERENCE_RE.match(expression)
    if match is None:
        return None
    pattern = match.group(1)
    for source in SOURCES:
        prefix = source + "."
        if pattern.startswith(prefix) and len(pattern) > len(prefix):
            return Reference(source, pattern[len(prefix) :])
    raise ValueError(
        f"{expression} refers to nothing prompt flow knows; use ${{data.<column>}}, "
        "${run.outputs.<output>} or ${run.inputs.<column>} (evaluators), or a literal value"
    )


def complete(mappings: dict[str, Any], inputs: list[str], optional: list[str]) -> dict[str, Any]:
    """The mapping a run applies: ``mappings`` plus ``${data.<input>}`` for every input that has
    neither a mapping nor a default value (prompt flow's default mapping)."""
    out: dict[str, Any] = {name: f"${{data.{name}}}" for name in inputs if name not in optional}
    out.update(mappings)
    return out


def data_columns(mappings: dict[str, Any], source: str = "data") -> list[str]:
    """The columns ``mappings`` reads from ``source`` (``data`` or ``run.inputs``), in order."""
    out: list[str] = []
    for expression in mappings.values():
        try:
            reference = parse(expression)
        except ValueError:
            continue
        if reference is not None and reference.source == source and reference.name not in out:
            out.append(reference.name)
    return out


def map_inputs(
    mappings: dict[str, Any],
    row: dict[str, Any],
    outputs: dict[str, Any] | None = None,
    run_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line's inputs: ``mappings`` applied to the data ``row``, the referenced run line's
    ``outputs`` and its data line ``run_data`` (default: ``row``, when the evaluator reads the
    run's own dataset). With no mappings at all, the row is passed as it is.

    Raises ValueError for an unknown ``${...}`` (the plan rejects those before any line runs).
    """
    if not mappings:
        return dict(row)
    sources = {
        "data": row,
        "run.outputs": outputs or {},
        "run.inputs": row if run_data is None else run_data,
    }
    out: dict[str, Any] = {}
    for target, expression in mappings.items():
        reference = parse(expression)
        out[target] = expression if reference is None else sources[reference.source].get(reference.name)
    return out
