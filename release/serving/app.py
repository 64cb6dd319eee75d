"""The flow's HTTP API as a small WSGI application (served by gunicorn, see :mod:`.server`).

Routes and bodies follow prompt flow's own serving app, so clients of ``pf flow serve`` and of
Azure ML's prompt flow deployments work unchanged:

- ``POST /score``: a JSON object of flow inputs -> 200 with a JSON object of flow outputs.
- ``GET /health``: 200 ``{"status": "Healthy", "version": ...}`` once the flow is loaded.
- ``GET /version``: ``{"status": "Healthy", "version": ..., "build_info": $BUILD_INFO, ...}``.
- ``GET /swagger.json``: an OpenAPI 3.0 document describing the flow's inputs and outputs.

Errors are JSON ``{"error": {"code": ..., "message": ...}}``:

- 400 ``InvalidJson`` / ``InvalidInput``: the body is not a JSON object, or an input without a
  default is missing (the message names it), or the engine rejects an input;
- 404 / 405: unknown route or method;
- 413 ``PayloadTooLarge``: a body over :data:`MAX_BODY_BYTES` (declared or, for chunked
  bodies, counted while reading; the connection is then closed);
- 415 ``UnsupportedMediaType``: a ``Content-Type`` other than JSON (none at all is read as JSON);
- 500 ``FlowRunFailed``: the flow failed.

HTTP itself (keep-alive, chunked request bodies, worker processes, graceful drain) is the
server's job; this module never touches a socket. The flow runs through the engine adapter
(:mod:`release.engine`), which also makes its outputs JSON-serializable.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from release import __version__
from release.engine.base import FlowInfo, FlowSession, LineFailed
from release.serving.telemetry import RequestTelemetry

log = logging.getLogger("genaiops.serving")

MAX_BODY_BYTES = 10 * 1024 * 1024  # 10 MiB
READ_CHUNK = 64 * 1024
# An oversized body is read and dropped up to this size before the 413 is sent, so that a client
# that writes the whole body before reading (most do) gets the answer instead of a reset
# connection (nginx's lingering close does the same); a longer body is cut off.
DISCARD_LIMIT_BYTES = 8 * MAX_BODY_BYTES
# The engine's messages for requests that do not match the flow's inputs (HTTP 400).
INPUT_ERRORS = (
    "InputNotFound",
    "InputTypeError",
    "InputMappingError",
    "MissingRequiredFlowInput",
    "InputError",
)
# prompt flow's input types -> JSON Schema types
# (https://microsoft.github.io/promptflow/reference/flow-yaml-schema-reference.html)
JSON_TYPES = {
    "string": "string",
    "int": "integer",
    "double": "number",
    "bool": "boolean",
    "list": "array",
    "object": "object",
}

StartResponse = Callable[..., Any]


class _TooLarge(Exception):
    pass


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        not media
        or media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    )


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, at most :data:`MAX_BODY_BYTES`; raises _TooLarge beyond that.

    With ``Content-Length`` the declared size is checked before reading; a chunked body has no
    length, so it is read (the server removes the chunk framing) until it ends or passes the limit.
    """
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.strip():
        length = int(declared)  # the server already rejected a malformed Content-Length
        if length > MAX_BODY_BYTES:
            raise _TooLarge
        return bytes(stream.read(length)) if length > 0 else b""
    parts: list[bytes] = []
    size = 0
    while True:
        part = stream.read(READ_CHUNK)
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        parts.append(part)


def _discard(stream: Any, limit: int) -> None:
    """Read and drop what is left of a body, at most ``limit`` bytes (the connection closes after)."""
    dropped = 0
    while dropped < limit:
        part = stream.read(READ_CHUNK)
        if not part:
            return
        dropped += len(part)


def swagger(info: FlowInfo, name: str) -> dict[str, Any]:
    """An OpenAPI 3.0 document of ``POST /score`` for the flow (like prompt flow's /swagger.json)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for input_name in info.inputs:
        spec = info.input_specs.get(input_name, {})
        schema: dict[str, Any] = {}
        json_type = JSON_TYPES.get(str(spec.get("type", "")))
        if json_type:
            schema["type"] = json_type
        if "default" in spec:
            schema["default"] = spec["default"]
        else:
            required.append(input_name)
        properties[input_name] = schema
    request_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        request_schema["required"] = required
    response_schema: dict[str, Any] = {"type": "object"}
    if info.outputs is not None:
        response_schema["properties"] = {
            out: {"type": JSON_TYPES.get(str(info.output_specs.get(out, {}).get("type", "")), "string")}
            for out in info.outputs
        }
    else:
        response_schema["additionalProperties"] = True
    error_schema = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": error_schema}}}

    return {
        "openapi": "3.0.0",
        "info": {"title": f"Promptflow[{name}] API", "version": "1.0.0", "x-flow-name": name},
        "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],
        "paths": {
            "/score": {
                "post": {
                    "summary": f"run the flow {name} with the given inputs",
                    "requestBody": {
                        "description": "the flow's inputs",
                        "required": True,
                        "content": {"application/json": {"schema": request_schema}},
                    },
                    "responses": {
                        "200": {
                            "description": "the flow's outputs",
                            "content": {"application/json": {"schema": response_schema}},
                        },
                        "400": error("an input is missing or invalid, or the body is not a JSON object"),
                        "413": error(f"the body is larger than {MAX_BODY_BYTES} bytes"),
                        "415": error("the Content-Type is not JSON"),
                        "500": error("the flow failed"),
                    },
                }
            }
        },
    }


class ScoringApp:
    """WSGI callable serving one loaded flow (``session``); thread-safe like the session."""

    def __init__(
        self,
        session: FlowSession,
        info: FlowInfo,
        name: str,
        engine: str,
        telemetry: RequestTelemetry | None = None,
        build_info: str | None = None,
    ) -> None:
        self.session = session
        self.info = info
        self.telemetry = telemetry
        self.required = [i for i in info.inputs if "default" not in info.input_specs.get(i, {})]
        self._swagger = json.dumps(swagger(info, name)).encode()
        self._health = json.dumps({"status": "Healthy", "version": __version__}).encode()
        build = os.environ.get("BUILD_INFO", "") if build_info is None else build_info
        self._version = json.dumps(
            {"status": "Healthy", "version": __version__, "build_info": build, "flow": name, "engine": engine}
        ).encode()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/score":
            if method != "POST":
                return self._error(start_response, HTTPStatus.METHOD_NOT_ALLOWED, "use POST /score", "POST")
            if self.telemetry is None:
                status, body, close = self._score(environ)
            else:
                started = time.time_ns()
                status, body, close = 500, b"", True
                try:
                    status, body, close = self._score(environ)
                finally:
                    self.telemetry.record(
                        "POST", "/score", status, started, time.time_ns(), environ.get("HTTP_HOST", "")
                    )
            return self._send(start_response, status, body, close)
        fixed = {"/health": self._health, "/version": self._version, "/swagger.json": self._swagger}
        if path in fixed:
            if method not in ("GET", "HEAD"):
                return self._error(start_response, HTTPStatus.METHOD_NOT_ALLOWED, f"use GET {path}", "GET")
            return self._send(start_response, 200, fixed[path])
        return self._error(
            start_response,
            HTTPStatus.NOT_FOUND,
            f"no route {method} {path}; use POST /score, GET /health, /version or /swagger.json",
        )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _send(
        start_response: StartResponse, status: int, body: bytes, close: bool = False, allow: str = ""
    ) -> list[bytes]:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if close:  # e.g. an unread oversized body: do not parse what is left as a next request
            headers.append(("Connection", "close"))
        if allow:
            headers.append(("Allow", allow))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]

    def _error(
        self, start_response: StartResponse, status: HTTPStatus, message: str, allow: str = ""
    ) -> list[bytes]:
        code = status.phrase.replace(" ", "")
        return self._send(start_response, status.value, _error_body(code, message), allow=allow)

    def _score(self, environ: dict[str, Any]) -> tuple[int, bytes, bool]:
        """(status, body, close the connection) of one ``POST /score``."""
        content_type = environ.get("CONTENT_TYPE", "")
        if not _is_json(content_type):
            message = f"Content-Type {content_type!r} is not supported; send the inputs as application/json"
            return 415, _error_body("UnsupportedMediaType", message), False
        try:
            raw = _read_body(environ)
        except _TooLarge:
            _discard(environ["wsgi.input"], DISCARD_LIMIT_BYTES)
            message = (
                f"the request body is larger than {MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES // 2**20} MiB)"
            )
            return 413, _error_body("PayloadTooLarge", message), True
        try:
            inputs = json.loads(raw or b"null")
        except ValueError as exc:
            return 400, _error_body("InvalidJson", f"the request body is not JSON: {exc}"), False
        if not isinstance(inputs, dict):
            return (
                400,
                _error_body("InvalidInput", "the request body must be a JSON object of flow inputs"),
                False,
            )
        missing = [name for name in self.required if name not in inputs]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            message = f"missing flow input(s) {names}: they have no default; send them in the JSON body"
            return 400, _error_body("InvalidInput", message), False
        try:
            # prompt flow's serving shape: a flex flow's single value is answered bare
            outputs = self.session.response(inputs)
        except LineFailed as exc:
            message = str(exc)
            if any(code in message.split() for code in INPUT_ERRORS):
                return 400, _error_body("InvalidInput", message[:2000]), False
            log.warning("flow run failed")
            return 500, _error_body("FlowRunFailed", message[:2000]), False
        except Exception as exc:  # a bug in the engine or the flow: still JSON, still 5xx
            log.warning("flow run raised %s", type(exc).__name__)
            return 500, _error_body("FlowRunFailed", f"{type(exc).__name__}: {exc}"[:2000]), False
        return 200, json.dumps(outputs, default=str).encode("utf-8"), False


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
