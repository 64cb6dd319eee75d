"""Variant and hyperparameter expansion: the template's mode and the full grid.

* ``template``: one node's variants at a time, every other node at its default variant; then one
  hyperparameter axis at a time, the other axes at their first value. Duplicates are dropped.
* ``grid``: every combination of every node's variants and every hyperparameter value.
"""

from __future__ import annotations

import itertools
from typing import Any

from release.engine.base import FlowInfo, FlowVariant
from release.experiment.spec import Experiment, ExperimentError


def node_variant_choices(experiment: Experiment, info: FlowInfo) -> dict[str, list[str]]:
    """node -> the variants to try (all, or the experiment's ``variants`` restriction), validated."""
    choices = {node: list(ids) for node, ids in info.variants.items()}
    for node, wanted in experiment.variants.items():
        if node not in info.variants:
            known = ", ".join(sorted(info.variants)) or "none (this flow has no node variants)"
            raise ExperimentError(
                f"{experiment.file}: variants.{node}: unknown node with variants; "
                f"nodes with variants: {known}"
            )
        for variant_id in wanted:
            if variant_id not in info.variants[node]:
                raise ExperimentError(
                    f"{experiment.file}: variants.{node}: unknown variant {variant_id!r} of node {node!r}; "
                    f"variants: {', '.join(info.variants[node])}"
                )
        choices[node] = list(wanted)
    return choices


def check_hyperparameters(experiment: Experiment, info: FlowInfo) -> None:
    for key, values in experiment.hyperparameters.items():
        where = f"{experiment.file}: hyperparameters.{key}"
        if not values:
            raise ExperimentError(f"{where}: give at least one value")
        if info.kind == "flex":
            if key not in info.init_params:
                raise ExperimentError(
                    f"{where}: {key!r} is not an init parameter of the flex flow; "
                    f"init parameters: {', '.join(sorted(info.init_params)) or 'none'}"
                )
            continue
        node, _, name = key.rpartition(".")
        if node:
            if node not in info.llm_nodes:
                raise ExperimentError(
                    f"{where}: unknown LLM node {node!r}; LLM nodes: {', '.join(sorted(info.llm_nodes))}"
                )
            accepted = set(info.llm_params.get(node, [])) | set(info.llm_nodes[node])
            if name not in accepted:
                raise ExperimentError(
                    f"{where}: the tool of LLM node {node!r} has no parameter {name!r}; "
                    f"it accepts: {', '.join(sorted(accepted))}"
                )
        elif not any(
            name in info.llm_params.get(n, []) or name in inputs for n, inputs in info.llm_nodes.items()
        ):
            known = sorted({p for params in info.llm_params.values() for p in params})
            raise ExperimentError(
                f"{where}: no LLM node's tool accepts {name!r} (judged by the tool's signature); "
                f"parameters the LLM tools accept: {', '.join(known) or 'none (no LLM nodes)'}; "
                "or name one node's input as '<node>.<input>'"
            )


def expand(experiment: Experiment, info: FlowInfo, mode: str | None = None) -> list[FlowVariant]:
    """Every flow variant the experiment runs, validated, in a stable order, without duplicates."""
    mode = mode or experiment.mode
    choices = node_variant_choices(experiment, info)
    check_hyperparameters(experiment, info)
    defaults = {
        node: (info.default_variants[node] if info.default_variants[node] in ids else ids[0])
        for node, ids in choices.items()
    }
    axes = experiment.hyperparameters
    first = {key: values[0] for key, values in axes.items()}
    points: list[FlowVariant] = []
    if mode == "grid":
        nodes = sorted(choices)
        keys = sorted(axes)
        for picked in itertools.product(*(choices[n] for n in nodes)):
            for combo in itertools.product(*(axes[k] for k in keys)):
                points.append(
                    FlowVariant(dict(zip(nodes, picked, strict=True)), dict(zip(keys, combo, strict=True)))
                )
    elif mode == "template":
        points.append(FlowVariant(dict(defaults), dict(first)))
        for node, ids in choices.items():
            for variant_id in ids:
                points.append(FlowVariant({**defaults, node: variant_id}, dict(first)))
        for key, values in axes.items():
            for value in values:
                params: dict[str, Any] = {**first, key: value}
                points.append(FlowVariant(dict(defaults), params))
    else:
        raise ExperimentError(
            f"{experiment.file}: mode: {mode!r} is not allowed; expected 'template' or 'grid'"
        )
    unique: dict[str, FlowVariant] = {}
    for point in points:
        unique.setdefault(point.id, point)
    return list(unique.values())
