"""Fault injection for the local model endpoint: settings, validation and reproducible decisions.

Faults come from start-up options or a ``--faults`` file, from ``POST /admin/faults`` at run time,
and per request from ``x-fault-*`` headers (which override the settings for that request).
Which requests fail is decided by a low-discrepancy sequence over a per-fault request counter
(no wall clock, no global random state), so N requests at rate r give round(r * N) +- 1 faults,
and the same sequence again after a reset or a restart with the same seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from release.errors import UserError

MAX_LATENCY_MS = 600_000.0
MAX_HANG_S = 3600.0
# Irrational steps (golden ratio, sqrt 2, sqrt 3 fractional parts): independent-looking sequences.
_STEPS = {"error": 0.6180339887498949, "rate_limit": 0.4142135623730951, "hang": 0.7320508075688772}

HEADER_LATENCY = "x-fault-latency-ms"
HEADER_ERROR_RATE = "x-fault-error-rate"
HEADER_429 = "x-fault-429"
HEADER_HANG = "x-fault-hang"
FAULT_HEADERS = (HEADER_LATENCY, HEADER_ERROR_RATE, HEADER_429, HEADER_HANG)


class FaultConfigError(UserError):
    """A fault setting is malformed; the message names where it came from, the field and the fix."""


@dataclass(frozen=True)
class FaultSettings:
    latency_ms: float = 0.0  # added before every chat completion answer
    error_rate: float = 0.0  # share of requests answered 500
    rate_limit_rate: float = 0.0  # share of requests answered 429
    retry_after_s: int = 1  # Retry-After of those 429s
    hang_rate: float = 0.0  # share of requests never answered (held until the client gives up)
    hang_max_s: float = 300.0  # a hung request is closed after this long at most
    seed: int = 0  # shifts the fault sequences

    @classmethod
    def from_mapping(cls, data: object, source: str) -> FaultSettings:
        """Validate a mapping such as a parsed ``--faults`` file or an admin request body."""
        if not isinstance(data, Mapping):
            raise FaultConfigError(
                f"{source}: expected a mapping of fault settings, got {type(data).__name__}"
            )
        allowed = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                raise FaultConfigError(
                    f"{source}: {key}: unknown fault setting; allowed: {', '.join(sorted(allowed))}"
                )
            values[key] = _check(source, str(key), value)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(source: str, key: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{source}: {key}: expected a number, got {value!r}")
    bounds: dict[str, tuple[float, float]] = {
        "latency_ms": (0.0, MAX_LATENCY_MS),
        "error_rate": (0.0, 1.0),
        "rate_limit_rate": (0.0, 1.0),
        "hang_rate": (0.0, 1.0),
        "retry_after_s": (0.0, 86_400.0),
        "hang_max_s": (0.0, MAX_HANG_S),
        "seed": (-(2**31), 2**31 - 1),
    }
    low, high = bounds[key]
    if not low <= value <= high:
        raise FaultConfigError(f"{source}: {key}: {value!r} is not between {low:g} and {high:g}")
    if key in ("retry_after_s", "seed"):
        if value != int(value):
            raise FaultConfigError(f"{source}: {key}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def load_fault_file(path: Path) -> FaultSettings:
    """Read fault settings from a JSON or YAML file (a mapping of the FaultSettings fields)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FaultConfigError(
            f"{path}: cannot read the fault file ({exc.strerror}); check --faults"
        ) from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # only needed for YAML fault files

            data = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # json.JSONDecodeError / yaml.YAMLError
        raise FaultConfigError(f"{path}: not valid JSON/YAML: {exc}") from exc
    return FaultSettings.from_mapping(data or {}, str(path))


@dataclass(frozen=True)
class Decision:
    latency_s: float = 0.0
    hang: bool = False
    status: int | None = None  # 429 or 500 when a fault answers instead of the model
    retry_after_s: int = 0


NO_FAULT = Decision()


class FaultState:
    """The live fault settings of a server, their counters and what they injected."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._counters = dict.fromkeys(_STEPS, 0)
        self.injected = {"latency": 0, "error": 0, "rate_limit": 0, "hang": 0}

    def replace(self, settings: FaultSettings) -> None:
        """New settings; the sequences restart so a test or benchmark sees reproducible faults."""
        self.settings = settings
        self._counters = dict.fromkeys(_STEPS, 0)

    @property
    def quiet(self) -> bool:
        s = self.settings
        return not (s.latency_ms or s.error_rate or s.rate_limit_rate or s.hang_rate)

    def _fires(self, kind: str, rate: float) -> bool:
        self._counters[kind] += 1
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        offset = (self.settings.seed * 0.5772156649015329) % 1.0
        return (self._counters[kind] * _STEPS[kind] + offset) % 1.0 < rate

    def decide(self, headers: Mapping[str, str]) -> Decision:
        """The fault for one request; raises FaultConfigError on a malformed ``x-fault-*`` header."""
        s = self.settings
        latency_ms = s.latency_ms
        error_rate = s.error_rate
        hang_forced = False
        forced_retry_after: int | None = None
        if HEADER_LATENCY in headers:
            latency_ms = float(_header_number(headers, HEADER_LATENCY, 0, MAX_LATENCY_MS))
        if HEADER_ERROR_RATE in headers:
            error_rate = float(_header_number(headers, HEADER_ERROR_RATE, 0, 1))
        if HEADER_429 in headers:
            forced_retry_after = int(_header_number(headers, HEADER_429, 0, 86_400, whole=True))
        if HEADER_HANG in headers:
            hang_forced = _header_bool(headers, HEADER_HANG)
        hang = self._fires("hang", s.hang_rate) or hang_forced
        limited = self._fires("rate_limit", s.rate_limit_rate) or forced_retry_after is not None
        failed = self._fires("error", error_rate)
        if latency_ms:
            self.injected["latency"] += 1
        if hang:
            self.injected["hang"] += 1
            return Decision(latency_s=latency_ms / 1000, hang=True)
        if limited:
            self.injected["rate_limit"] += 1
            retry = s.retry_after_s if forced_retry_after is None else forced_retry_after
            return Decision(latency_s=latency_ms / 1000, status=429, retry_after_s=retry)
        if failed:
            self.injected["error"] += 1
            return Decision(latency_s=latency_ms / 1000, status=500)
        return Decision(latency_s=latency_ms / 1000) if latency_ms else NO_FAULT


def _header_number(
    headers: Mapping[str, str], name: str, low: float, high: float, whole: bool = False
) -> float:
    raw = headers[name].strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise FaultConfigError(f"header {name}: {raw!r} is not {kind} between {low:g} and {high:g}")
    return value


def _header_bool(headers: Mapping[str, str], name: str) -> bool:
    raw = headers[name].strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise FaultConfigError(f"header {name}: {raw!r} is not one of true/false/1/0")
