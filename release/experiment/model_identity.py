"""What identifies the model behind the connections, for the runner's line cache key.

A cached line is only valid for the model that answered it. The identity covers each resolved
connection (name, category, target URL, api type and version; never the key) and, where the
endpoint advertises it, the model's identity: the ``id`` and ``system_fingerprint``/``version``
of each model listed by ``GET <target>/models`` (OpenAI-compatible endpoints; the local model
endpoint reports its responder version there) or ``GET <target>/openai/models`` (Azure OpenAI).

It is read once per run (one bounded request per connection), never per line. An endpoint that
does not answer the listing gives ``unavailable``: the static part of the identity still applies.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from release.engine.base import ConnectionSpec
from release.registry.hashing import hash_text

PROBE_TIMEOUT_S = 5.0
_MODEL_FIELDS = ("id", "system_fingerprint", "version", "model")


def describe_connection(conn: ConnectionSpec) -> dict[str, Any]:
    """The static identity of a connection (no secret)."""
    return {
        "name": conn.name,
        "category": conn.category,
        "target": conn.target.rstrip("/"),
        "api_type": conn.api_type,
        "api_version": conn.api_version,
    }


def _models_request(conn: ConnectionSpec) -> tuple[str, dict[str, str]] | None:
    target = conn.target.rstrip("/")
    if not target.startswith(("http://", "https://")):
        return None
    if conn.category == "OpenAI":
        headers = {"Authorization": f"Bearer {conn.api_key}"} if conn.api_key else {}
        return f"{target}/models", headers
    if conn.category == "AzureOpenAI":
        version = conn.api_version or "2024-02-01"
        headers = {"api-key": conn.api_key} if conn.api_key else {}
        return f"{target}/openai/models?api-version={version}", headers
    return None


def advertised_models(conn: ConnectionSpec, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict[str, str]] | str:
    """The models the endpoint lists (identifying fields only), or ``unavailable``/``not-listed``."""
    request = _models_request(conn)
    if request is None:
        return "not-listed"
    url, headers = request
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s, follow_redirects=False)
        if response.status_code != 200:
            return "unavailable"
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return "unavailable"
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return "unavailable"
    models = [
        {k: str(m[k]) for k in _MODEL_FIELDS if isinstance(m, dict) and m.get(k) is not None}
        for m in data
        if isinstance(m, dict)
    ]
    return sorted(models, key=lambda m: json.dumps(m, sort_keys=True))


def model_identity(connections: list[ConnectionSpec], probe: bool = True) -> str:
    """A digest of every connection's identity and its advertised models (stable while nothing changes)."""
    parts = []
    for conn in sorted(connections, key=lambda c: c.name):
        entry: dict[str, Any] = describe_connection(conn)
        entry["models"] = advertised_models(conn) if probe else "not-probed"
        parts.append(json.dumps(entry, sort_keys=True))
    return hash_text("model-identity", *parts)
