"""The local model endpoint: an OpenAI-compatible HTTP server that stands in for the LLM offline.

It is NOT a language model. Answers are deterministic and derived only from the prompt of each
request (see :mod:`release.local_env.responder`), so flows, evaluations, gates and load tests run
with no Azure account and no internet, and a better prompt really scores better.

Run it as::

    LOCAL_MODEL_API_KEY=... python -m release.local_env.model_server --host 127.0.0.1 --port 8300

It prints ``model endpoint listening on http://127.0.0.1:PORT`` once it accepts connections
(``--port 0`` picks a free port). Routes:

- ``POST /v1/chat/completions`` (``Authorization: Bearer <key>``)
- ``POST /openai/deployments/{name}/chat/completions?api-version=...`` (``api-key: <key>`` or Bearer)
- ``GET /v1/models`` (key; each model carries the ``system_fingerprint`` of the responder version),
  ``GET /health`` (no key)
- ``GET|POST /admin/faults``, ``GET /admin/stats`` (key): change faults on a running server

The HTTP/1.1 layer is a small hand-written asyncio protocol with keep-alive: it answers requests
without latency faults synchronously in ``data_received`` and only makes a task for delayed ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hmac
import itertools
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from release.errors import UserError
from release.local_env.faults import (
    FAULT_HEADERS,
    NO_FAULT,
    Decision,
    FaultConfigError,
    FaultSettings,
    FaultState,
    load_fault_file,
)
from release.local_env.responder import RESPONDER_VERSION, Messages, Params, respond

API_KEY_ENV = "LOCAL_MODEL_API_KEY"
DEFAULT_MODEL = "local-model"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 120.0  # an idle keep-alive connection (or a request that never completes) is closed
SWEEP_INTERVAL_S = 5.0
STREAM_WORDS_PER_CHUNK = 4
# Identifies the answering logic, like OpenAI's ``system_fingerprint``: it changes when the
# responder's behaviour does, so caches keyed on it (the experiment runner's) do not serve stale answers.
SYSTEM_FINGERPRINT = f"fp_genaiops_local_{RESPONDER_VERSION}"
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Response:
    """A full response; ``chunks`` makes it a chunked (SSE) body; status 0 closes without answering."""

    __slots__ = ("body", "chunks", "close", "content_type", "extra", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        extra: str = "",
        chunks: list[bytes] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.extra = extra  # extra header lines, each ending in \r\n
        self.chunks = chunks
        self.close = close

    def encode(self, keep_alive: bool) -> bytes:
        connection = "" if keep_alive and not self.close else "Connection: close\r\n"
        reason = REASONS.get(self.status, "Error")
        head = f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: {self.content_type}\r\n"
        if self.chunks is None:
            return (
                f"{head}Content-Length: {len(self.body)}\r\n{self.extra}{connection}\r\n"
            ).encode() + self.body
        framing = "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
        parts = [f"{head}{framing}{self.extra}{connection}\r\n".encode()]
        for chunk in self.chunks:
            parts.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)


def json_response(status: int, payload: object, extra: str = "") -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), extra=extra)


def error_response(
    status: int, message: str, kind: str, code: str | None = None, param: str | None = None, extra: str = ""
) -> Response:
    """An error in the OpenAI shape (the openai client reads ``error.message``)."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json_response(status, {"error": error}, extra=extra)


def _internal_error() -> Response:
    return error_response(500, "The local model endpoint failed on this request (a bug)", "server_error")


class BadRequest(Exception):
    """A request body the endpoint cannot answer; becomes a 400 naming the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# --------------------------------------------------------------------------- the application


class ModelServer:
    """Routing, api-key checks, faults and the OpenAI response shapes (no sockets here)."""

    def __init__(
        self,
        api_key: str,
        faults: FaultSettings | None = None,
        model: str = DEFAULT_MODEL,
        fingerprint: str = SYSTEM_FINGERPRINT,
    ) -> None:
        if not api_key:
            raise UserError(f"the model endpoint needs an api key: set {API_KEY_ENV}")
        self._key = api_key.encode()
        self.model = model
        self.fingerprint = fingerprint  # reported in /v1/models and every completion
        self.faults = FaultState(faults or FaultSettings())
        self.started = int(time.time())
        self.requests = 0
        self.completions = 0
        self.connections: set[_Connection] = set()
        self._ids = itertools.count(1)

    # ----------------------------------------------------------------- routing

    def handle(self, req: Request) -> Response | Coroutine[Any, Any, Response]:
        self.requests += 1
        path = req.path
        if path in ("/v1/chat/completions", "/chat/completions"):
            return self._only(req, "POST") or self._chat(req, None, bearer_only=True)
        if path.startswith("/openai/deployments/"):
            name, _, rest = path[len("/openai/deployments/") :].partition("/")
            if rest == "chat/completions" and name:
                return self._only(req, "POST") or self._azure_chat(req, name)
        elif path == "/health":
            return self._only(req, "GET") or json_response(
                200, {"status": "ok", "model": self.model, "uptime_s": int(time.time()) - self.started}
            )
        elif path in ("/v1/models", "/models"):
            return self._only(req, "GET") or self._models(req)
        elif path == "/admin/faults":
            return self._only(req, "GET", "POST") or self._admin_faults(req)
        elif path == "/admin/stats":
            return self._only(req, "GET") or self._admin_stats(req)
        return error_response(404, f"Unknown route {req.method} {path}", "invalid_request_error", "not_found")

    @staticmethod
    def _only(req: Request, *methods: str) -> Response | None:
        if req.method in methods:
            return None
        return error_response(
            405,
            f"{req.method} is not allowed on {req.path}; use {' or '.join(methods)}",
            "invalid_request_error",
            "method_not_allowed",
            extra=f"Allow: {', '.join(methods)}\r\n",
        )

    def _authorized(self, headers: dict[str, str], bearer_only: bool = False) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self._key):
            return True
        key = headers.get("api-key")
        return not bearer_only and key is not None and hmac.compare_digest(key.strip().encode(), self._key)

    @staticmethod
    def _unauthorized(bearer_only: bool) -> Response:
        how = (
            "'Authorization: Bearer <key>'"
            if bearer_only
            else "'api-key: <key>' or 'Authorization: Bearer <key>'"
        )
        return error_response(
            401,
            f"Incorrect or missing API key. Send the local model endpoint's key ({API_KEY_ENV}) as {how}.",
            "invalid_request_error",
            "invalid_api_key",
            extra='WWW-Authenticate: Bearer realm="local-model"\r\n',
        )

    def _models(self, req: Request) -> Response:
        if not self._authorized(req.headers):
            return self._unauthorized(False)
        model = {
            "id": self.model,
            "object": "model",
            "created": self.started,
            "owned_by": "genaiops-local",
            "system_fingerprint": self.fingerprint,
        }
        return json_response(200, {"object": "list", "data": [model]})

    def _admin_faults(self, req: Request) -> Response:
        if not self._authorized(req.headers):
            return self._unauthorized(False)
        if req.method == "POST":
            try:
                data = json.loads(req.body or b"{}")
                settings = FaultSettings.from_mapping(data, "POST /admin/faults body")
            except ValueError:
                return error_response(
                    400, "The body of POST /admin/faults is not JSON", "invalid_request_error"
                )
            except FaultConfigError as exc:
                return error_response(400, str(exc), "invalid_request_error", "invalid_fault")
            self.faults.replace(settings)
        return json_response(200, self.faults.settings.as_dict())

    def _admin_stats(self, req: Request) -> Response:
        if not self._authorized(req.headers):
            return self._unauthorized(False)
        stats = {
            "requests": self.requests,
            "completions": self.completions,
            "open_connections": len(self.connections),
            "injected": dict(self.faults.injected),
        }
        return json_response(200, stats)

    # ----------------------------------------------------------------- chat completions

    def _azure_chat(self, req: Request, deployment: str) -> Response | Coroutine[Any, Any, Response]:
        if "api-version=" not in req.query:
            if not self._authorized(req.headers):
                return self._unauthorized(False)
            return error_response(
                400,
                "Missing the api-version query parameter, e.g. ?api-version=2024-10-21",
                "invalid_request_error",
                param="api-version",
            )
        return self._chat(req, deployment, bearer_only=False)

    def _chat(
        self, req: Request, deployment: str | None, bearer_only: bool
    ) -> Response | Coroutine[Any, Any, Response]:
        if not self._authorized(req.headers, bearer_only):
            return self._unauthorized(bearer_only)
        decision = NO_FAULT
        if not self.faults.quiet or any(h in req.headers for h in FAULT_HEADERS):
            try:
                decision = self.faults.decide(req.headers)
            except FaultConfigError as exc:
                return error_response(400, str(exc), "invalid_request_error", "invalid_fault_header")
        if decision is NO_FAULT:
            return self._complete(req, deployment)
        return self._faulty(decision, req, deployment)

    async def _faulty(self, decision: Decision, req: Request, deployment: str | None) -> Response:
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.hang:
            await asyncio.sleep(self.faults.settings.hang_max_s)
            return Response(0, close=True)  # give up on the client: close without an answer
        if decision.status == 429:
            return error_response(
                429,
                f"Rate limit reached for the local model endpoint (injected fault). "
                f"Please retry after {decision.retry_after_s} seconds.",
                "requests",
                "rate_limit_exceeded",
                extra=f"Retry-After: {decision.retry_after_s}\r\n",
            )
        if decision.status == 500:
            return error_response(
                500,
                "The server had an error while processing your request (injected fault).",
                "server_error",
                "injected_fault",
            )
        return self._complete(req, deployment)

    def _complete(self, req: Request, deployment: str | None) -> Response:
        try:
            body = json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            return error_response(
                400,
                "We could not parse the JSON body of your request. Send a JSON object with 'messages'.",
                "invalid_request_error",
            )
        try:
            request = _parse_chat(body)
        except BadRequest as exc:
            return error_response(400, str(exc), "invalid_request_error", param=exc.param)
        messages, params, model, stream, include_usage = request
        model = deployment or model or self.model
        answer = respond(messages, params)
        self.completions += 1
        completion_tokens = sum(c.completion_tokens for c in answer.choices)
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": answer.prompt_tokens + completion_tokens,
        }
        ident = f"chatcmpl-local{next(self._ids):010d}"
        created = int(time.time())
        if not stream:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(answer.choices)
            ]
            payload = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": self.fingerprint,
                "choices": choices,
                "usage": usage,
            }
            return json_response(200, payload)
        chunks = []
        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": self.fingerprint,
        }
        if include_usage:
            base["usage"] = None

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            return (
                b"data: "
                + json.dumps({**base, "choices": choices, **more}, separators=(",", ":")).encode()
                + b"\n\n"
            )

        for i, c in enumerate(answer.choices):
            delta: dict[str, Any] = {"role": "assistant", "content": ""}
            chunks.append(event([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]))
            for piece in _pieces(c.text):
                chunks.append(
                    event(
                        [{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]
                    )
                )
            chunks.append(
                event([{"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}])
            )
        if include_usage:
            chunks.append(event([], usage=usage))
        chunks.append(b"data: [DONE]\n\n")
        return Response(200, content_type="text/event-stream", chunks=chunks)


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    step = STREAM_WORDS_PER_CHUNK
    return [
        " ".join(words[i : i + step]) + (" " if i + step < len(words) else "")
        for i in range(0, len(words), step)
    ]


def _parse_chat(body: object) -> tuple[Messages, Params, str | None, bool, bool]:
    """Validate a chat completions body; null is accepted for every optional parameter."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequest("'messages' must be a non-empty array of {role, content} objects", "messages")
    messages = []
    for i, message in enumerate(raw_messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", f"messages[{i}]")
        messages.append((message["role"], _content_text(message.get("content"), i)))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string", "model")
    temperature = _number(body, "temperature", 0.0, 2.0)
    max_tokens = body.get("max_completion_tokens")
    max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BadRequest("'max_tokens' must be a positive integer or null", "max_tokens")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 128):
        raise BadRequest("'n' must be an integer between 1 and 128 or null", "n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("'seed' must be an integer or null", "seed")
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    elif stop is not None:
        raise BadRequest("'stop' must be a string, an array of up to 4 strings, or null", "stop")
    for name in ("top_p", "presence_penalty", "frequency_penalty"):
        _number(body, name, -2.0, 2.0)
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise BadRequest("'response_format' must be an object or null", "response_format")
    json_mode = isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean or null", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object or null", "stream_options")
    include_usage = bool(options and options.get("include_usage"))
    params = Params(
        temperature=temperature or 0.0,
        max_tokens=max_tokens,
        stop=stops,
        seed=seed,
        n=n or 1,
        json_mode=json_mode,
    )
    return tuple(messages), params, model, bool(stream), include_usage


def _content_text(content: object, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    raise BadRequest(
        f"messages[{index}].content must be a string, an array of parts, or null", f"messages[{index}]"
    )


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be a number between {low:g} and {high:g}, or null", name)
    return float(value)


# --------------------------------------------------------------------------- HTTP/1.1 over asyncio


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses requests in order and answers them in order."""

    __slots__ = ("app", "buffer", "busy", "closed", "continued", "last_active", "task", "transport")

    def __init__(self, app: ModelServer) -> None:
        self.app = app
        self.buffer = bytearray()
        self.busy = False
        self.closed = False
        self.continued = False  # "100 Continue" already sent for the request being received
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_active = time.monotonic()
        if not self.busy:
            self._drain()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def _drain(self) -> None:
        while not self.busy and not self.closed:
            request = self._next_request()
            if request is None:
                return
            try:
                result = self.app.handle(request)
            except Exception:  # a bug: answer 500 and keep serving (the trace goes to stderr)
                traceback.print_exc()
                result = _internal_error()
            if isinstance(result, Response):
                self._send(result, request.keep_alive)
            else:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self._finish(result, request.keep_alive))

    async def _finish(self, pending: Coroutine[Any, Any, Response], keep_alive: bool) -> None:
        try:
            response = await pending
        except Exception:
            traceback.print_exc()
            response = _internal_error()
        self.task = None
        self.busy = False
        if not self.closed:
            self._send(response, keep_alive)
            self._drain()

    def _send(self, response: Response, keep_alive: bool) -> None:
        assert self.transport is not None
        self.last_active = time.monotonic()
        if response.status:
            self.transport.write(response.encode(keep_alive))
        if response.status == 0 or response.close or not keep_alive:
            self.close()

    def _next_request(self) -> Request | None:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                self._reject(431, "Request headers are larger than 64 KiB")
            return None
        try:
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._reject(400, "Malformed HTTP request")
            return None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reject(411, "Chunked request bodies are not supported; send Content-Length")
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self._reject(413, "Request body larger than 16 MiB")
            return None
        if len(buffer) < end + 4 + length:
            if not self.continued and headers.get("expect", "").lower() == "100-continue":
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it
                self.continued = True
            return None
        self.continued = False
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        path, _, query = target.partition("?")
        return Request(method, path, query, headers, body, keep_alive)

    def _reject(self, status: int, message: str) -> None:
        self._send(error_response(status, message, "invalid_request_error"), keep_alive=False)


async def _sweep_idle(app: ModelServer) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        limit = time.monotonic() - IDLE_TIMEOUT_S
        for conn in list(app.connections):
            if not conn.busy and conn.last_active < limit:
                conn.close()


async def serve(
    app: ModelServer, host: str, port: int, on_ready: Callable[[str], None], stop: asyncio.Event | None = None
) -> None:
    """Serve ``app`` on host:port until SIGTERM/SIGINT (or ``stop`` is set)."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(lambda: _Connection(app), host, port, backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"model endpoint: {host}:{port} is already in use; choose another --port"
            ) from exc
        raise UserError(f"model endpoint: cannot listen on {host}:{port}: {exc.strerror}") from exc
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    sweeper = loop.create_task(_sweep_idle(app))
    on_ready(f"http://{shown}:{bound[1]}")
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        server.close()
        for conn in list(app.connections):
            conn.close()
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m release.local_env.model_server",
        description="Deterministic OpenAI-compatible stand-in for the model (not a real LLM). "
        f"The api key is read from ${API_KEY_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one; default 0)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name reported by /v1/models")
    parser.add_argument("--faults", type=Path, default=None, help="JSON/YAML file of fault settings")
    parser.add_argument("--latency-ms", type=float, default=None, help="latency added to every completion")
    parser.add_argument("--error-rate", type=float, default=None, help="share of requests answered 500")
    parser.add_argument("--rate-limit-rate", type=float, default=None, help="share of requests answered 429")
    parser.add_argument("--retry-after", type=float, default=None, help="Retry-After seconds of the 429s")
    parser.add_argument("--hang-rate", type=float, default=None, help="share of requests never answered")
    parser.add_argument("--hang-max-s", type=float, default=None, help="close a hung request after (300)")
    parser.add_argument("--seed", type=float, default=None, help="shifts the fault sequences")
    return parser


OPTION_FIELDS = {
    "latency_ms": "latency_ms",
    "error_rate": "error_rate",
    "rate_limit_rate": "rate_limit_rate",
    "retry_after": "retry_after_s",
    "hang_rate": "hang_rate",
    "hang_max_s": "hang_max_s",
    "seed": "seed",
}


def fault_settings_from_args(args: argparse.Namespace) -> FaultSettings:
    """The --faults file, overridden by the individual fault options."""
    values = load_fault_file(args.faults).as_dict() if args.faults else {}
    for option, field in OPTION_FIELDS.items():
        value = getattr(args, option)
        if value is not None:
            flag = "--" + option.replace("_", "-")
            values[field] = FaultSettings.from_mapping({field: value}, f"option {flag}").as_dict()[field]
    return FaultSettings.from_mapping(values, str(args.faults or "fault options"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        print(
            f"error: {API_KEY_ENV} is not set; the model endpoint refuses to start without an api key "
            f"(export {API_KEY_ENV}=<a random secret>; it is never read from the command line)",
            file=sys.stderr,
        )
        return 2
    try:
        app = ModelServer(key, fault_settings_from_args(args), model=args.model)

        def ready(url: str) -> None:
            print(f"model endpoint listening on {url}", flush=True)

        asyncio.run(serve(app, args.host, args.port, ready))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
