"""What the server needs at start-up: the flow folder and its connections, from the environment.

The image holds ``/app/serving.json`` (written at build time, never a secret) naming the flow
folder, the chosen variant (node variants and parameters) and, per connection, its category,
target and the environment variables that carry its key (``<CONN>_API_KEY``, required) and an
optional target override (``<CONN>_API_BASE``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from release.engine.base import ConnectionSpec, FlowVariant
from release.serving.telemetry import TelemetryConfig, TelemetryConfigError, config_from_environ

DEFAULT_MANIFEST = "/app/serving.json"
DEFAULT_THREADS = 8


class StartupError(Exception):
    """The server cannot start; the message says which variable or file to fix."""


def key_env(connection: str) -> str:
    return f"{connection.upper().replace('-', '_').replace(' ', '_')}_API_KEY"


def base_env(connection: str) -> str:
    return f"{connection.upper().replace('-', '_').replace(' ', '_')}_API_BASE"


@dataclass(frozen=True)
class ServerSettings:
    flow_dir: Path
    variant: FlowVariant
    connections: list[ConnectionSpec]
    connection_overrides: dict[str, str]
    host: str
    port: int
    workers: int
    telemetry: TelemetryConfig | None = None  # None: no Application Insights connection string
    threads: int = DEFAULT_THREADS  # request threads per worker
    flow_name: str = "flow"  # for /swagger.json and /version


def _int_env(environ: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise StartupError(f"{name}={value} must be between {low} and {high}")
    return value


def load_settings(environ: dict[str, str] | None = None) -> ServerSettings:
    env = dict(os.environ if environ is None else environ)
    manifest_path = Path(env.get("GENAIOPS_SERVING_MANIFEST", DEFAULT_MANIFEST))
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"{manifest_path}: cannot read the serving manifest: {exc}") from None
    flow_dir = Path(env.get("GENAIOPS_FLOW_DIR", manifest.get("flow_dir", "/app/flow")))
    if not flow_dir.is_dir():
        raise StartupError(f"{manifest_path}: flow_dir {flow_dir} is not a folder")
    connections: list[ConnectionSpec] = []
    missing: list[str] = []
    for item in manifest.get("connections", []):
        name = str(item["name"])
        key_var = str(item.get("key_env") or key_env(name))
        if key_var not in env or not env[key_var]:
            missing.append(key_var)
            continue
        connections.append(
            ConnectionSpec(
                name=name,
                category=str(item.get("category", "CustomKeys")),
                api_key=env[key_var],
                target=env.get(str(item.get("base_env") or base_env(name))) or str(item.get("target", "")),
                api_version=item.get("api_version"),
            )
        )
    if missing:
        raise StartupError(
            f"connection key(s) not set: {', '.join(missing)}; pass them as environment variables "
            "to the container (e.g. docker run -e VAR=...); see /app/settings.json"
        )
    try:
        telemetry = config_from_environ(env)
    except TelemetryConfigError as exc:
        raise StartupError(str(exc)) from None
    cpus = os.cpu_count() or 1
    chosen = manifest.get("variant") or {}
    return ServerSettings(
        flow_dir=flow_dir,
        variant=FlowVariant(
            variants=dict(chosen.get("variants") or {}), params=dict(chosen.get("params") or {})
        ),
        connections=connections,
        connection_overrides={
            str(k): str(v) for k, v in (manifest.get("connection_overrides") or {}).items()
        },
        host=env.get("HOST", "0.0.0.0"),
        port=_int_env(env, "PORT", 8080, 1, 65535),
        workers=_int_env(env, "WORKERS", max(2, cpus), 1, 64),
        telemetry=telemetry,
        threads=_int_env(env, "THREADS", DEFAULT_THREADS, 1, 256),
        flow_name=str(manifest.get("flow") or flow_dir.name),
    )
