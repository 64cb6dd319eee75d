"""The local model endpoint: an OpenAI-compatible HTTP server that stands in for the LLM offline.

It is NOT a language model. Answers are deterministic and derived only from the prompt of each
request (see :mod:`release.local_env.responder`), so flows, evaluations, gates and load tests run
with no Azure account and no internet, and a better prompt really scores better.

Run it as::

    LOCAL_MODEL_API_KEY=... python -m release.local_env.model_server --host 127.0.0.1 --port 8300

It prints ``model endpoint listening on http://127.0.0.1:PORT`` once it accepts connections
(``--port 0`` picks a free port; ``--fd N`` serves on an already bound, listening socket that the
parent process passed on, so a port is never released between choosing and serving). Routes:

- ``POST /v1/chat/completions`` (``Authorization: Bearer <key>``)
- ``POST /openai/deployments/{name}/chat/completions?api-version=...`` (``api-key: <key>`` or Bearer)
- ``GET /v1/models`` (key; each model carries the ``system_fingerprint`` of the responder version),
  ``GET /health`` (no key)
- ``GET|POST /admin/faults``, ``GET /admin/stats`` (key): change faults on a running server

HTTP (keep-alive, pipelining, chunked request bodies, ``Expect: 100-continue``, size limits,
idle timeouts) is aiohttp's server (https://docs.aiohttp.org/en/stable/web_reference.html); this
module holds the routes, the api-key checks, the faults and the OpenAI response shapes.
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
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

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
MAX_BODY_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 120.0  # an idle keep-alive connection is closed after this long
SHUTDOWN_TIMEOUT_S = 5.0  # requests in flight get this long to finish on SIGTERM
BACKLOG = 1024
STREAM_WORDS_PER_CHUNK = 4
# Identifies the answering logic, like OpenAI's ``system_fingerprint``: it changes when the
# responder's behaviour does, so caches keyed on it (the experiment runner's) do not serve stale answers.
SYSTEM_FINGERPRINT = f"fp_genaiops_local_{RESPONDER_VERSION}"
JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type=JSON,
        headers=headers,
    )


def error_response(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in the OpenAI shape (the openai client reads ``error.message``)."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json_response(status, {"error": error}, headers)


class BadRequest(Exception):
    """A request body the endpoint cannot answer; becomes a 400 naming the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# --------------------------------------------------------------------------- the application


class ModelServer:
    """Api-key checks, faults and the OpenAI response shapes; :meth:`application` adds the routes."""

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
        # chat requests being handled now (faults and latency included) and the most at once since
        # the last POST /admin/stats/reset: what a client's concurrency bound looks like from here
        self.in_flight = 0
        self.max_in_flight = 0
        self.open_connections: Callable[[], int] = lambda: 0  # set by serve()
        self._ids = itertools.count(1)

    def application(self) -> web.Application:
        """The aiohttp application: routes, body size limit, OpenAI-shaped errors."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        app.router.add_post("/v1/chat/completions", self._openai_chat)
        app.router.add_post("/chat/completions", self._openai_chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        app.router.add_get("/health", self._health, allow_head=False)
        app.router.add_get("/v1/models", self._models, allow_head=False)
        app.router.add_get("/models", self._models, allow_head=False)
        app.router.add_get("/admin/faults", self._admin_faults, allow_head=False)
        app.router.add_post("/admin/faults", self._admin_faults)
        app.router.add_get("/admin/stats", self._admin_stats, allow_head=False)
        app.router.add_post("/admin/stats/reset", self._admin_stats_reset)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts requests; turns aiohttp's own errors (404, 405, 413, ...) into the OpenAI shape."""
        self.requests += 1
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = sorted(exc.allowed_methods)
            return error_response(
                405,
                f"{request.method} is not allowed on {request.path}; use {' or '.join(allowed)}",
                "invalid_request_error",
                "method_not_allowed",
                headers={"Allow": ", ".join(allowed)},
            )
        except web.HTTPNotFound:
            return error_response(
                404, f"Unknown route {request.method} {request.path}", "invalid_request_error", "not_found"
            )
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413, f"Request body larger than {MAX_BODY_BYTES // 2**20} MiB", "invalid_request_error"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason, "invalid_request_error")

    # ----------------------------------------------------------------- small routes

    async def _health(self, request: web.Request) -> web.Response:
        uptime = int(time.time()) - self.started
        return json_response(200, {"status": "ok", "model": self.model, "uptime_s": uptime})

    def _authorized(self, headers: Mapping[str, str], bearer_only: bool = False) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self._key):
            return True
        key = headers.get("api-key")
        return not bearer_only and key is not None and hmac.compare_digest(key.strip().encode(), self._key)

    @staticmethod
    def _unauthorized(bearer_only: bool) -> web.Response:
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
            headers={"WWW-Authenticate": 'Bearer realm="local-model"'},
        )

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers):
            return self._unauthorized(False)
        model = {
            "id": self.model,
            "object": "model",
            "created": self.started,
            "owned_by": "genaiops-local",
            "system_fingerprint": self.fingerprint,
        }
        return json_response(200, {"object": "list", "data": [model]})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers):
            return self._unauthorized(False)
        if request.method == "POST":
            try:
                data = json.loads(await request.read() or b"{}")
                settings = FaultSettings.from_mapping(data, "POST /admin/faults body")
            except ValueError:
                return error_response(
                    400, "The body of POST /admin/faults is not JSON", "invalid_request_error"
                )
            except FaultConfigError as exc:
                return error_response(400, str(exc), "invalid_request_error", "invalid_fault")
            self.faults.replace(settings)
        return json_response(200, self.faults.settings.as_dict())

    async def _admin_stats(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers):
            return self._unauthorized(False)
        stats = {
            "requests": self.requests,
            "completions": self.completions,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "open_connections": self.open_connections(),
            "injected": dict(self.faults.injected),
        }
        return json_response(200, stats)

    # ----------------------------------------------------------------- chat completions

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, None, bearer_only=True)

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        if "api-version" not in request.query:
            if not self._authorized(request.headers):
                return self._unauthorized(False)
            return error_response(
                400,
                "Missing the api-version query parameter, e.g. ?api-version=2024-10-21",
                "invalid_request_error",
                param="api-version",
            )
        return await self._chat(request, request.match_info["deployment"], bearer_only=False)

    async def _admin_stats_reset(self, request: web.Request) -> web.Response:
        """Restart the ``max_in_flight`` count from the requests in flight now."""
        if not self._authorized(request.headers):
            return self._unauthorized(False)
        self.max_in_flight = self.in_flight
        return json_response(200, {"in_flight": self.in_flight, "max_in_flight": self.max_in_flight})

    async def _chat(
        self, request: web.Request, deployment: str | None, bearer_only: bool
    ) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat_counted(request, deployment, bearer_only)
        finally:
            self.in_flight -= 1

    async def _chat_counted(
        self, request: web.Request, deployment: str | None, bearer_only: bool
    ) -> web.StreamResponse:
        headers = request.headers
        if not self._authorized(headers, bearer_only):
            return self._unauthorized(bearer_only)
        decision = NO_FAULT
        if not self.faults.quiet or any(h in headers for h in FAULT_HEADERS):
            try:
                decision = self.faults.decide(headers)
            except FaultConfigError as exc:
                return error_response(400, str(exc), "invalid_request_error", "invalid_fault_header")
        if decision is not NO_FAULT:
            faulty = await self._fault(decision, request)
            if faulty is not None:
                return faulty
        return await self._complete(request, deployment)

    async def _fault(self, decision: Decision, request: web.Request) -> web.Response | None:
        """Wait the injected latency; the fault's answer, or None to answer normally."""
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.hang:
            await asyncio.sleep(self.faults.settings.hang_max_s)
            # give up on the client: close the connection without an answer
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        if decision.status == 429:
            return error_response(
                429,
                f"Rate limit reached for the local model endpoint (injected fault). "
                f"Please retry after {decision.retry_after_s} seconds.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": str(decision.retry_after_s)},
            )
        if decision.status == 500:
            return error_response(
                500,
                "The server had an error while processing your request (injected fault).",
                "server_error",
                "injected_fault",
            )
        return None

    async def _complete(self, request: web.Request, deployment: str | None) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return error_response(
                400,
                "We could not parse the JSON body of your request. Send a JSON object with 'messages'.",
                "invalid_request_error",
            )
        try:
            parsed = _parse_chat(body)
        except BadRequest as exc:
            return error_response(400, str(exc), "invalid_request_error", param=exc.param)
        messages, params, model, stream, include_usage = parsed
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
        base: dict[str, Any] = {
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

        response = web.StreamResponse(status=200, headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i, c in enumerate(answer.choices):
            delta: dict[str, Any] = {"role": "assistant", "content": ""}
            await response.write(
                event([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}])
            )
            for piece in _pieces(c.text):
                await response.write(
                    event(
                        [{"index": i, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]
                    )
                )
            await response.write(
                event([{"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}])
            )
        if include_usage:
            await response.write(event([], usage=usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


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


# --------------------------------------------------------------------------- serving


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket on host:port (0 = a free port); a clear error when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"model endpoint: {host}:{port} is already in use; choose another --port"
            ) from exc
        raise UserError(f"model endpoint: cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


async def serve(
    app: ModelServer,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``sock`` (else a new socket on host:port) until SIGTERM/SIGINT or ``stop``."""
    loop = asyncio.get_running_loop()
    sock = sock or listening_socket(host, port)
    sock.setblocking(False)
    runner = web.AppRunner(
        app.application(),
        handle_signals=False,
        access_log=None,
        keepalive_timeout=IDLE_TIMEOUT_S,
        handler_cancellation=True,  # a client that goes away cancels its (e.g. delayed) request
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    server = runner.server
    app.open_connections = lambda: len(server.connections) if server is not None else 0
    site = web.SockSite(runner, sock, backlog=BACKLOG)
    await site.start()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    on_ready(f"http://{shown}:{bound[1]}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m release.local_env.model_server",
        description="Deterministic OpenAI-compatible stand-in for the model (not a real LLM). "
        f"The api key is read from ${API_KEY_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one; default 0)")
    parser.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on this inherited file descriptor of a bound, listening TCP socket "
        "(instead of --host/--port)",
    )
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


def inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket the parent passed as file descriptor ``fd`` (``--fd``)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise UserError(f"model endpoint: --fd {fd} is not an open socket ({exc.strerror})") from exc
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise UserError(f"model endpoint: --fd {fd} is not a listening TCP socket")
    return sock


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

        sock = inherited_socket(args.fd) if args.fd is not None else None
        asyncio.run(serve(app, args.host, args.port, ready, sock=sock))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
