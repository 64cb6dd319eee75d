"""In-process invocation of one flow request: load a flow once, then call it per request.

The production server (``release/serving/``) runs inside the flow image and calls
:func:`load_invoker` once per worker process. Connections are passed in as plain
:class:`ConnectionValues` (resolved from environment variables by the caller), so nothing
outside this package knows promptflow's connection classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Invoker = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ConnectionValues:
    """One connection with its secret, resolved at start-up from the environment."""

    name: str
    category: str  # OpenAI | AzureOpenAI | CustomKeys | CognitiveSearch | CognitiveService
    api_key: str
    target: str = ""
    api_version: str | None = None
    api_type: str | None = None


class FlowInputError(ValueError):
    """The request does not match the flow's inputs (a client error, HTTP 400)."""


def _to_promptflow(conn: ConnectionValues) -> Any:
    from promptflow.connections import (
        AzureOpenAIConnection,
        CognitiveSearchConnection,
        CustomConnection,
        OpenAIConnection,
    )

    if conn.category == "OpenAI":
        return OpenAIConnection(name=conn.name, api_key=conn.api_key, base_url=conn.target or None)
    if conn.category == "AzureOpenAI":
        return AzureOpenAIConnection(
            name=conn.name,
            api_key=conn.api_key,
            api_base=conn.target,
            api_type=conn.api_type or "azure",
            api_version=conn.api_version or "2024-02-01",
        )
    if conn.category == "CognitiveSearch":
        return CognitiveSearchConnection(
            name=conn.name, api_key=conn.api_key, api_base=conn.target, api_version=conn.api_version
        )
    return CustomConnection(
        name=conn.name, secrets={"api_key": conn.api_key}, configs={"target": conn.target}
    )


def load_invoker(flow_dir: Path, connections: list[ConnectionValues]) -> Invoker:
    """Load the flow at ``flow_dir`` (DAG or flex) once; return ``invoke(inputs) -> outputs``.

    Input validation errors raise :class:`FlowInputError`; a failed flow run raises
    ``RuntimeError`` with the engine's message.
    """
    from promptflow.core import Flow
    from promptflow.core._serving.flow_invoker import FlowInvoker

    for name in ("flowinvoker", "execution", "execution.flow", "promptflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Pre-resolved connections in the executor's format; the provider adds nothing (no local
    # connection store, no workspace lookup inside the image).
    resolved = {c.name: _to_promptflow(c)._to_execution_connection_dict() for c in connections}
    flow = Flow.load(source=str(flow_dir))
    invoker = FlowInvoker(flow, connection_provider=list, connections=resolved, raise_ex=True)

    def invoke(inputs: dict[str, Any]) -> dict[str, Any]:
        try:
            result = invoker.invoke(inputs, disable_input_output_logging=True)
        except Exception as exc:
            kind = type(exc).__name__
            if kind in {
                "InputNotFound",
                "InputTypeError",
                "InputNotFoundInInputsMapping",
                "MissingRequiredFlowInput",
            }:
                raise FlowInputError(str(exc)) from None
            if "input" in kind.lower() and "validat" in str(exc).lower():
                raise FlowInputError(str(exc)) from None
            raise RuntimeError(f"{kind}: {exc}") from None
        return dict(result)

    return invoke
