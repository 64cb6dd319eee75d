"""What the experiment runner needs from a flow engine, independent of prompt flow.

Prompt flow retires in April 2027: a successor engine implements this interface and
nothing outside ``release/engine/`` changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class FlowInfo:
    """The static shape of a flow folder."""

    path: Path
    kind: Literal["dag", "flex"]
    inputs: list[str]
    outputs: list[str] | None  # None: not declared (flex flows)
    variants: dict[str, list[str]] = field(default_factory=dict)  # node -> variant ids
    default_variants: dict[str, str] = field(default_factory=dict)
    llm_nodes: dict[str, list[str]] = field(default_factory=dict)  # node -> input names (all variants)
    init_params: dict[str, Any] = field(default_factory=dict)  # flex: init parameter -> default
    connections: list[str] = field(default_factory=list)  # connection names the flow uses
    # input -> {"type": prompt flow type (string|int|double|bool|list|object), "default": value};
    # "default" is absent when the input has none (a caller must send it)
    input_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # output -> {"type": ...}


@dataclass(frozen=True)
class ConnectionSpec:
    """A connection resolved from the environment config; ``api_key`` is never logged."""

    name: str
    category: str  # OpenAI | AzureOpenAI | ...
    target: str
    api_key: str = field(repr=False, default="")
    api_version: str | None = None
    api_type: str | None = None  # azure | openai, when the config names it

    def __repr__(self) -> str:
        return f"ConnectionSpec(name={self.name!r}, category={self.category!r}, target={self.target!r})"


@dataclass(frozen=True)
class FlowVariant:
    """One point of the experiment: node variants and hyperparameters."""

    variants: dict[str, str] = field(default_factory=dict)  # node -> variant id
    params: dict[str, Any] = field(default_factory=dict)  # "<node>.<input>" | "<input>" | init param

    @property
    def id(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.variants.items())]
        parts += [f"{k}={v}" for k, v in sorted(self.params.items())]
        return ",".join(parts) or "default"


class LineFailed(Exception):
    """One line failed; ``retryable`` for throttling / transient errors, with the server's Retry-After."""

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class LineOutput:
    outputs: dict[str, Any]
    aggregation_inputs: Any = None  # what the flow's aggregation needs from this line


class FlowSession(ABC):
    """A flow loaded once with one variant, executing lines (thread-safe) and aggregation."""

    @abstractmethod
    def run_line(self, inputs: dict[str, Any], index: int) -> LineOutput:
        """The line's outputs, or raise :class:`LineFailed`."""

    @abstractmethod
    def aggregate(self, inputs: list[dict[str, Any]], lines: list[LineOutput]) -> dict[str, float]:
        """Run the flow's aggregation (evaluators) over successful lines: its metrics."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class Engine(ABC):
    name: str

    @abstractmethod
    def export_variant(
        self,
        flow_dir: Path,
        variant: FlowVariant,
        target: Path,
        connection_overrides: dict[str, str] | None = None,
    ) -> Path:
        """Copy the flow to ``target`` with ``variant`` baked in as its default (for release images)."""

    @abstractmethod
    def describe(self, flow_dir: Path) -> FlowInfo:
        """Read a flow folder's shape (inputs, outputs, nodes, variants) without running it."""

    @abstractmethod
    def open(
        self,
        flow_dir: Path,
        variant: FlowVariant,
        connections: list[ConnectionSpec],
        connection_overrides: dict[str, str] | None = None,
    ) -> FlowSession:
        """Load the flow with ``variant`` applied, ready to run lines concurrently."""
