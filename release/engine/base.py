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
    outputs: list[str] | None  # None: not known before the flow runs (a flex entry returning a dict)
    variants: dict[str, list[str]] = field(default_factory=dict)  # node -> variant ids
    default_variants: dict[str, str] = field(default_factory=dict)
    llm_nodes: dict[str, list[str]] = field(default_factory=dict)  # node -> input names (all variants)
    # node -> the parameters its LLM tool accepts, read from the tool function's signature (all variants)
    llm_params: dict[str, list[str]] = field(default_factory=dict)
    init_params: dict[str, Any] = field(default_factory=dict)  # flex: init parameter -> default
    connections: list[str] = field(default_factory=list)  # connection names the flow uses
    optional_inputs: list[str] = field(default_factory=list)  # inputs with a default value
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
class CallUsage:
    """One model call of a line: the names it was made with and the tokens the response reported.

    ``deployment`` is the model/deployment name the caller asked for (Azure OpenAI: the deployment),
    ``model`` the model the response names. Token counts are None when the response carried no
    ``usage`` (a streamed answer).
    """

    deployment: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallUsage:
        return cls(
            data.get("deployment"),
            data.get("model"),
            data.get("prompt_tokens"),
            data.get("completion_tokens"),
        )


@dataclass(frozen=True)
class LineOutput:
    outputs: dict[str, Any]  # JSON-ready, as the engine stores a batch run's line outputs
    aggregation_inputs: Any = None  # what the flow's aggregation needs from this line
    single_output: bool = False  # the flow returned one plain value, stored as outputs["output"]
    usage: tuple[CallUsage, ...] = ()  # every model call the line made, in order


class FlowSession(ABC):
    """A flow loaded once with one variant, executing lines (thread-safe) and aggregation."""

    @abstractmethod
    def run_line(self, inputs: dict[str, Any], index: int) -> LineOutput:
        """The line's outputs, or raise :class:`LineFailed`."""

    def response(self, inputs: dict[str, Any]) -> Any:
        """The JSON body answering one served request: the line's outputs, or the single value a
        flow returned (prompt flow's server answers ``"short"``, not ``{"output": "short"}``).

        Raises :class:`LineFailed` like :meth:`run_line`.
        """
        line = self.run_line(inputs, 0)
        return line.outputs.get("output") if line.single_output else line.outputs

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
        request_timeout_s: float | None = None,
    ) -> FlowSession:
        """Load the flow with ``variant`` applied, ready to run lines concurrently.

        ``request_timeout_s`` bounds every model call a line makes (seconds; None: the client's own
        timeout). A call that takes longer is abandoned and the line fails with a retryable
        :class:`LineFailed` naming the timeout.
        """

    @abstractmethod
    def effective_inputs(
        self, flow_dir: Path, variant: FlowVariant, connection_overrides: dict[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """What ``variant`` really sets: ``{node: {parameter: value}}`` for every LLM node (DAG; the
        literal tool parameters after variants and hyperparameters are applied) or ``{"init": {...}}``
        (flex: the init arguments). For reports: which temperature/max_tokens/... a run used."""
