"""Cost and latency of one run (variant x dataset), from the usage and wall time its lines recorded.

Figures (the key names in metrics.json / metrics.csv, and what gates may threshold):

* ``tokens_prompt``, ``tokens_completion``, ``tokens_total``: tokens of every model call of the
  run's successful lines, as the responses' ``usage`` reported them; null when a call reported none.
* ``cost_total``: sum over calls of ``prompt_tokens / 1000 * prompt_per_1k + completion_tokens /
  1000 * completion_per_1k`` with the price of the call's deployment (else its model) from the
  config's ``pricing`` table, in ``pricing.currency``; ``cost_per_line = cost_total / successful
  lines``. Null ("n/a") when any call's model has no price or reported no usage: never 0.
* ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``: percentiles (numpy's default linear
  interpolation) of the successful lines' wall times in milliseconds (the attempt that produced the
  outputs; retries' waits are not latency). Null when no line succeeded.

Evaluator calls (LLM judges) are not counted: these are the flow's own costs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from release.config import Pricing
from release.engine.base import CallUsage

COST_LATENCY_KEYS = (
    "tokens_prompt",
    "tokens_completion",
    "tokens_total",
    "cost_total",
    "cost_per_line",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
)


def call_cost(call: CallUsage, pricing: Pricing) -> float | None:
    """The price of one call in ``pricing.currency``, or None (no price for its model, or no usage)."""
    price = None
    for name in (call.deployment, call.model):
        if name and name in pricing.models:
            price = pricing.models[name]
            break
    if price is None or call.prompt_tokens is None or call.completion_tokens is None:
        return None
    return (
        call.prompt_tokens / 1000 * price.prompt_per_1k
        + call.completion_tokens / 1000 * price.completion_per_1k
    )


def unpriced_models(calls: Iterable[CallUsage], pricing: Pricing) -> list[str]:
    """Model/deployment names of calls without a price: what to add to ``pricing.models``."""
    names = set()
    for call in calls:
        if not any(name and name in pricing.models for name in (call.deployment, call.model)):
            names.add(call.deployment or call.model or "(unnamed)")
    return sorted(names)


def cost_and_latency(
    lines: list[tuple[list[CallUsage] | None, float | None]], pricing: Pricing
) -> dict[str, float | None]:
    """The figures above for a run's successful lines, each given as (its calls, its wall ms);
    calls None: not recorded (e.g. a run in the Azure ML workspace), so tokens and cost are n/a."""
    recorded = all(usage is not None for usage, _ in lines)
    calls = [call for usage, _ in lines for call in usage or []]
    out: dict[str, float | None] = dict.fromkeys(COST_LATENCY_KEYS)
    if not recorded or any(c.prompt_tokens is None or c.completion_tokens is None for c in calls):
        prompt = completion = None
    else:
        prompt = sum(int(c.prompt_tokens or 0) for c in calls)
        completion = sum(int(c.completion_tokens or 0) for c in calls)
    out["tokens_prompt"] = None if prompt is None else float(prompt)
    out["tokens_completion"] = None if completion is None else float(completion)
    out["tokens_total"] = None if prompt is None or completion is None else float(prompt + completion)
    costs = [call_cost(c, pricing) for c in calls]
    if lines and recorded and all(c is not None for c in costs):
        total = float(sum(c for c in costs if c is not None))
        out["cost_total"] = round(total, 8)
        out["cost_per_line"] = round(total / len(lines), 8)
    walls = [wall for _, wall in lines if wall is not None]
    if walls:
        p50, p95, p99 = np.percentile(np.asarray(walls, dtype=float), [50, 95, 99])
        out["latency_p50_ms"] = round(float(p50), 3)
        out["latency_p95_ms"] = round(float(p95), 3)
        out["latency_p99_ms"] = round(float(p99), 3)
    return out
