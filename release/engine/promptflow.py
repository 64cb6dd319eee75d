"""The prompt flow engine: the only module of the toolkit that imports ``promptflow``.

Lines run in-process through prompt flow's own executor (``FlowExecutor``: the same node
resolution, tools, variants and aggregation as ``pf run``), but the runner drives them with
its own bounded thread pool: a ``pf run`` batch run costs ~8 s of start-up per run on these
machines, which makes many small runs slow (see docs/experiments.md and bench/experiment.py).
:func:`batch_run` keeps the classic ``pf run`` path (the template's way) for comparison.

Standard streams: prompt flow swaps ``sys.stdout``/``sys.stderr`` for its node log writers while a
line runs, and with lines on several threads it leaves them swapped; its loggers also bind to the
stream of the moment they are created (a closed per-test capture stream, or a node log writer that
logs back into them: a RecursionError). :class:`_StreamGuard` puts the streams back when the last
line ends, and :func:`_live_log_streams` makes prompt flow's log handlers write to whatever the
real stream is at write time. Library users and notebooks need no workaround.

Telemetry is off and traces go nowhere; ``PF_HOME_DIRECTORY`` is the repo's git-ignored
``.genaiops/promptflow`` (or the folder given). Connections are built in memory from the
environment config at run time: their keys are never written to disk.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from release.engine.base import (
    CallUsage,
    ConnectionSpec,
    Engine,
    FlowInfo,
    FlowSession,
    FlowVariant,
    LineFailed,
    LineOutput,
)
from release.engine.flex_entry import entry_shape, output_dict
from release.errors import UserError
from release.project import project_root
from release.yamlfile import read_mapping

REPO_ROOT = project_root()
DEFAULT_HOME = REPO_ROOT / ".genaiops" / "promptflow"
_DAG = "flow.dag.yaml"
_FLEX = "flow.flex.yaml"
_LLM_TYPES = ("llm", "custom_llm")
LINE_TIMEOUT_S = 300  # one line (all its nodes and their retries) never runs longer than this
_RETRYABLE = (
    "ModelCallTimeout",
    "RateLimitError",
    "ExceedMaxRetryTimes",
    "APIConnectionError",
    "APITimeoutError",
    "InternalServerError",
    "ServiceUnavailable",
    "Timeout",
)
_RETRY_AFTER = re.compile(r"retry[-_ ]after[=: ]+([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
_setup_lock = threading.Lock()
_load_lock = threading.Lock()
_configured_home: Path | None = None


def configure(home: Path | None = None) -> Path:
    """Point prompt flow at ``home``, telemetry off, trace destination none. Idempotent."""
    global _configured_home
    with _setup_lock:
        home = (home or Path(os.environ.get("PF_HOME_DIRECTORY", DEFAULT_HOME))).resolve()
        if _configured_home == home:
            return home
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PF_HOME_DIRECTORY"] = str(home)
        os.environ.setdefault("PROMPTFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("PF_DISABLE_TRACING", "true")
        os.environ.setdefault("PF_LOGGING_LEVEL", "WARNING")
        # prompt flow builds an Azure Monitor exporter even with telemetry off: no control-plane calls
        os.environ.setdefault("APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED", "true")
        os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
        os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
        import logging

        for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from promptflow._sdk._configuration import Configuration

        config = Configuration.get_instance()
        for key, value in (("telemetry.enabled", False), ("trace.destination", "none")):
            config.set_config(key, value)  # persisted in the prompt flow home (pf.yaml)
            section, _, name = key.partition(".")
            config.config.setdefault(section, {})[name] = value  # and in memory, whatever the cwd
        _share_tls_context()
        _bound_model_calls()
        _cache_package_tools()
        _live_log_streams()
        _configured_home = home
        return home


def _share_tls_context() -> None:
    """Build the default TLS context once per process instead of once per model call.

    promptflow-tools creates a new OpenAI client (a new HTTP client) for every LLM call, and each
    one builds a default TLS context by loading the whole CA bundle: ~28 ms of CPU, most of a DAG
    line's cost. The shared context is the same default (certificate verification on, same CA
    files); only that default case is shared, an explicit ``verify``/``cert`` builds its own.
    """
    import functools
    import importlib

    for name in ("httpx._transports.default", "httpx2._transports.default"):
        try:
            transports = importlib.import_module(name)
        except ImportError:
            continue
        original = transports.create_ssl_context  # type: ignore[attr-defined]
        if getattr(original, "_genaiops_shared", False):
            continue

        def make(original: Any) -> Any:
            @functools.lru_cache(maxsize=8)
            def cached(trust_env: bool, cert_file: str | None, cert_dir: str | None) -> Any:
                return original(verify=True, cert=None, trust_env=trust_env)

            def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
                if verify is True and cert is None:
                    return cached(trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
                return original(verify=verify, cert=cert, trust_env=trust_env)

            create_ssl_context._genaiops_shared = True  # type: ignore[attr-defined]
            return create_ssl_context

        transports.create_ssl_context = make(original)  # type: ignore[attr-defined]


class _CallLog:
    """The model calls of one line (shared by the threads its nodes run on) and their time bound."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.calls: list[CallUsage] = []
        self.timeouts = 0
        self._lock = threading.Lock()

    def record(self, requested: Any, response: Any) -> None:
        usage = getattr(response, "usage", None)
        model = getattr(response, "model", None)
        prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion = getattr(usage, "completion_tokens", None) if usage is not None else None
        if usage is not None and completion is None:
            completion = 0  # embeddings report prompt tokens only
        call = CallUsage(
            str(requested) if isinstance(requested, str) and requested else None,
            str(model) if isinstance(model, str) and model else None,
            int(prompt) if isinstance(prompt, int) else None,
            int(completion) if isinstance(completion, int) else None,
        )
        with self._lock:
            self.calls.append(call)


_CALLS: contextvars.ContextVar[_CallLog | None] = contextvars.ContextVar("genaiops_model_calls", default=None)
_timeout_error: type[Exception] | None = None


def _bound_model_calls() -> None:
    """Wrap the OpenAI SDK's create methods (chat, completions, embeddings; prompt flow's own list):
    inside a line run by this engine, each call gets the session's per-call timeout and its
    ``usage`` is recorded. Outside a line (serving, notebooks) the methods behave as before.

    A call that times out raises ``ModelCallTimeout`` (an ``OpenAIError`` that is neither a status
    nor a connection error), which promptflow-tools' retry decorator does not retry: the line
    fails at once, naming the timeout, and the runner retries the whole line within its
    ``max_retries`` budget. (promptflow-tools would otherwise retry a timed-out call up to 100
    times: promptflow/tools/common.py ``handle_openai_error``.) A per-call ``timeout=`` given by
    the flow's own code wins over the session's.
    """
    global _timeout_error
    import openai
    from promptflow.tracing._integrations._openai_injector import available_openai_apis_and_injectors

    if _timeout_error is None:

        class ModelCallTimeout(openai.OpenAIError):
            """A model call abandoned after the experiment's ``request_timeout_s``."""

        ModelCallTimeout.__qualname__ = ModelCallTimeout.__name__

        _timeout_error = ModelCallTimeout
    timeout_error = _timeout_error

    def message(log: _CallLog) -> str:
        return (
            f"model call abandoned after {log.timeout_s:g} s without an answer "
            "(request_timeout_s in the experiment file)"
        )

    def wrap_sync(original: Any) -> Any:
        @functools.wraps(original)
        def create(*args: Any, **kwargs: Any) -> Any:
            log = _CALLS.get()
            if log is None:
                return original(*args, **kwargs)
            if log.timeout_s is not None and not isinstance(kwargs.get("timeout"), (int, float)):
                kwargs["timeout"] = log.timeout_s
            try:
                response = original(*args, **kwargs)
            except openai.APITimeoutError as exc:
                log.timeouts += 1
                raise timeout_error(message(log)) from exc
            log.record(kwargs.get("model"), response)
            return response

        return create

    def wrap_async(original: Any) -> Any:
        @functools.wraps(original)
        async def create(*args: Any, **kwargs: Any) -> Any:
            log = _CALLS.get()
            if log is None:
                return await original(*args, **kwargs)
            if log.timeout_s is not None and not isinstance(kwargs.get("timeout"), (int, float)):
                kwargs["timeout"] = log.timeout_s
            try:
                response = await original(*args, **kwargs)
            except openai.APITimeoutError as exc:
                log.timeouts += 1
                raise timeout_error(message(log)) from exc
            log.record(kwargs.get("model"), response)
            return response

        return create

    for api, method, _trace_type, injector, _name in available_openai_apis_and_injectors():
        current = getattr(api, method)
        if getattr(current, "_genaiops_bounded", False):
            continue
        is_async = getattr(injector, "__name__", "") == "inject_async" or inspect.iscoroutinefunction(current)
        wrapped = wrap_async(current) if is_async else wrap_sync(current)
        wrapped._genaiops_bounded = True  # type: ignore[attr-defined]
        wrapped._original = current  # type: ignore[attr-defined]  # prompt flow's injector: already wrapped
        setattr(api, method, wrapped)


def _cache_package_tools() -> None:
    """Read the installed packages' tool list once per process.

    ``FlowExecutor.create`` re-parses every package tool YAML (promptflow-tools ships dozens) on
    each call: ~0.6 s per flow variant. The list only changes when packages are installed, so it
    is cached per set of requested tool ids (each caller gets its own copy).
    """
    import copy
    import threading as _threading

    from promptflow._core import tools_manager

    original = tools_manager.collect_package_tools
    if getattr(original, "_genaiops_cached", False):
        return
    cache: dict[frozenset[str] | None, dict[str, Any]] = {}
    lock = _threading.Lock()

    def collect_package_tools(keys: list[str] | None = None) -> dict[str, Any]:
        key = frozenset(keys) if keys is not None else None
        with lock:
            if key not in cache:
                cache[key] = original(keys)
            return copy.deepcopy(cache[key])

    collect_package_tools._genaiops_cached = True  # type: ignore[attr-defined]
    tools_manager.collect_package_tools = collect_package_tools


def _unwrap(stream: Any) -> Any:
    """The real stream under prompt flow's node log writers (which write to the stream they wrapped)."""
    from promptflow._core.log_manager import NodeLogWriter

    for _ in range(64):  # writers wrap writers when lines overlap; the chain is short and finite
        if not isinstance(stream, NodeLogWriter):
            return stream
        stream = getattr(stream, "_prev_out", None)
    return stream


class _LiveStream:
    """A log handler's stream resolving ``sys.<name>`` at write time (never a node log writer)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _target(self) -> Any:
        stream = _unwrap(getattr(sys, self.name, None))
        if stream is None or getattr(stream, "closed", False):
            stream = getattr(sys, f"__{self.name}__", None)
        return stream

    def write(self, text: str) -> int:
        stream = self._target()
        if stream is not None:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        stream = self._target()
        if stream is not None and hasattr(stream, "flush"):
            stream.flush()


def _live_log_streams() -> None:
    """Point prompt flow's console log handlers at :class:`_LiveStream` (idempotent, cheap).

    Its loggers are made at import time or lazily, each ``StreamHandler`` keeping the
    ``sys.stdout``/``sys.stderr`` of that moment: a pytest capture stream closed after its test, or a
    node log writer whose writes log again (RecursionError under retried 429s). Called when the
    engine is configured and whenever a flow is opened (later imports may add loggers).
    """
    import logging

    from promptflow._utils import logger_utils

    loggers: list[logging.Logger] = [
        x
        for x in vars(logger_utils).values()
        if isinstance(x, logging.Logger) and x.name.startswith("execution")
    ]
    for name, item in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(item, logging.Logger) and (
            name.startswith("promptflow") or name == "azure.core.pipeline.policies._universal"
        ):
            loggers.append(item)
    for log in loggers:
        for handler in list(log.handlers):
            if type(handler) is not logging.StreamHandler or isinstance(handler.stream, _LiveStream):
                continue
            out = handler.stream in (sys.stdout, sys.__stdout__) or log.name.startswith("execution")
            handler.acquire()
            try:
                handler.stream = _LiveStream("stdout" if out else "stderr")
            finally:
                handler.release()


class _StreamGuard:
    """Restores ``sys.stdout``/``sys.stderr`` when the last concurrent prompt flow call ends.

    prompt flow's ``NodeLogManager`` saves and restores the streams in one shared object per
    executor, so overlapping lines on several threads leave a node log writer in place. The
    streams seen when the first of the overlapping calls started are put back when the last one
    ends (only when prompt flow left its writer there: a change made by someone else stays).
    """

    _lock = threading.Lock()
    _active = 0
    _saved: tuple[Any, Any] = (None, None)

    def __enter__(self) -> None:
        with _StreamGuard._lock:
            if _StreamGuard._active == 0:
                _StreamGuard._saved = (_unwrap(sys.stdout), _unwrap(sys.stderr))
            _StreamGuard._active += 1

    def __exit__(self, *exc: object) -> None:
        from promptflow._core.log_manager import NodeLogWriter

        with _StreamGuard._lock:
            _StreamGuard._active -= 1
            if _StreamGuard._active == 0:
                out, err = _StreamGuard._saved
                if isinstance(sys.stdout, NodeLogWriter) and out is not None:
                    sys.stdout = out
                if isinstance(sys.stderr, NodeLogWriter) and err is not None:
                    sys.stderr = err
                _StreamGuard._saved = (None, None)


def connection_dicts(connections: list[ConnectionSpec]) -> dict[str, dict[str, Any]]:
    """Connections in prompt flow's in-memory provider format (never persisted)."""
    out: dict[str, dict[str, Any]] = {}
    for c in connections:
        if c.category == "AzureOpenAI":
            value = {
                "api_key": c.api_key,
                "api_base": c.target,
                "api_type": "azure",
                "api_version": c.api_version or "2024-02-01",
            }
            out[c.name] = {"type": "AzureOpenAIConnection", "value": value}
        elif c.category == "OpenAI":
            out[c.name] = {"type": "OpenAIConnection", "value": {"api_key": c.api_key, "base_url": c.target}}
        else:
            out[c.name] = {
                "type": "CustomConnection",
                "value": {"endpoint": c.target},
                "secrets": {"key": c.api_key},
            }
    return out


def _flow_file(flow_dir: Path) -> Path:
    for name in (_DAG, _FLEX):
        if (flow_dir / name).is_file():
            return flow_dir / name
    raise UserError(f"{flow_dir}: no {_DAG} or {_FLEX}; a flow folder needs one of them")


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_mapping(path)


# The tool class behind a ``type: llm`` node, by its ``provider`` (prompt flow's built-in LLM tools);
# any other provider falls back to promptflow-tools' generic ``llm`` tool.
_LLM_PROVIDER_TOOLS = {
    "AzureOpenAI": "promptflow.tools.aoai.AzureOpenAI",
    "OpenAI": "promptflow.tools.openai.OpenAI",
}
_GENERIC_LLM_TOOL = "promptflow.tools.llm.llm"
# Parameters of an LLM tool that are not hyperparameters: the connection and prompt are the node's
# wiring, ``stream`` is set by the executor.
_NOT_HYPERPARAMETERS = frozenset({"self", "connection", "prompt", "stream"})


def _llm_tool_id(node: dict[str, Any]) -> str:
    """The import path of the tool function an LLM node runs."""
    if node.get("type") == "llm":
        provider = _LLM_PROVIDER_TOOLS.get(str(node.get("provider") or ""))
        api = str(node.get("api") or (node.get("inputs") or {}).get("api") or "chat")
        return f"{provider}.{api}" if provider else _GENERIC_LLM_TOOL
    source = node.get("source") or {}
    return str(source.get("tool") or _GENERIC_LLM_TOOL)


@functools.lru_cache(maxsize=64)
def llm_tool_params(tool_id: str) -> tuple[str, ...]:
    """The parameters the LLM tool ``tool_id`` accepts, from its function's signature.

    ``tool_id`` is ``module.function`` or ``module.Class.method`` (e.g. ``promptflow.tools.llm.llm``,
    ``promptflow.tools.aoai.AzureOpenAI.chat``). ``**kwargs`` (the prompt template's variables),
    the connection, the prompt and ``stream`` are left out. An unknown tool accepts nothing.
    """
    import importlib

    parts = tool_id.split(".")
    target: Any = None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                target = getattr(target, attr)
        except AttributeError:
            target = None
        break
    if target is None or not callable(target):
        return ()
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return ()
    return tuple(
        name
        for name, param in signature.parameters.items()
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        and name not in _NOT_HYPERPARAMETERS
    )


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.strip().startswith("${")


_ANNOTATION_TYPES = {
    "str": "string",
    "int": "int",
    "float": "double",
    "bool": "bool",
    "list": "list",
    "dict": "object",
}


def _flex_input_specs(flow_dir: Path, entry: str) -> dict[str, dict[str, Any]]:
    """Types (from annotations) and defaults (literals) of a flex entry's inputs, read with ``ast``."""
    import ast

    module, _, name = entry.partition(":")
    source = flow_dir / (module.replace(".", "/") + ".py")
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    call: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    skip = 0
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            call = next((i for i in node.body if isinstance(i, functions) and i.name == "__call__"), None)
            skip = 1  # self
        elif isinstance(node, functions) and node.name == name:
            call = node
    if call is None:
        return {}
    positional = call.args.args[skip:]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(call.args.defaults))
    defaults += list(call.args.defaults)
    pairs = list(zip(positional, defaults, strict=True))
    pairs += list(zip(call.args.kwonlyargs, call.args.kw_defaults, strict=True))
    specs: dict[str, dict[str, Any]] = {}
    for arg, default in pairs:
        spec: dict[str, Any] = {}
        annotation = ast.unparse(arg.annotation).split("[", 1)[0] if arg.annotation else ""
        if annotation in _ANNOTATION_TYPES:
            spec["type"] = _ANNOTATION_TYPES[annotation]
        if default is not None:
            try:
                spec["default"] = ast.literal_eval(default)
            except ValueError:
                spec["default"] = None  # a default exists, but is not a literal
        specs[arg.arg] = spec
    return specs


class PromptflowEngine(Engine):
    name = "promptflow"

    def __init__(self, home: Path | None = None) -> None:
        self.home = configure(home)

    def warm_up(self) -> None:
        """Pay the one-time process costs now (executor import, package tool list): for benchmarks."""
        from promptflow._core import tools_manager
        from promptflow.executor import FlowExecutor  # noqa: F401

        tools_manager.collect_package_tools()

    # -- shape -------------------------------------------------------------------
    def describe(self, flow_dir: Path) -> FlowInfo:
        flow_file = _flow_file(flow_dir)
        data = _read_yaml(flow_file)
        if flow_file.name == _FLEX:
            init = data.get("init") or {}
            entry = str(data.get("entry", ""))
            shape = entry_shape(flow_dir.resolve(), entry, str(flow_file))
            return FlowInfo(
                path=flow_dir,
                kind="flex",
                inputs=shape.inputs,
                outputs=shape.outputs,
                optional_inputs=shape.optional_inputs,
                input_specs=_flex_input_specs(flow_dir, entry),
                init_params={k: (v or {}).get("default") for k, v in init.items()},
                connections=[
                    str((v or {}).get("default"))
                    for v in init.values()
                    if str((v or {}).get("type", "")).endswith("Connection")
                ],
            )
        nodes = {n["name"]: n for n in data.get("nodes") or []}
        variants: dict[str, list[str]] = {}
        defaults: dict[str, str] = {}
        llm_nodes: dict[str, list[str]] = {}
        llm_params: dict[str, list[str]] = {}
        connections: set[str] = set()
        all_node_defs: list[dict[str, Any]] = [n for n in nodes.values() if not n.get("use_variants")]
        for node_name, spec in (data.get("node_variants") or {}).items():
            variants[node_name] = list((spec.get("variants") or {}).keys())
            defaults[node_name] = str(spec.get("default_variant_id") or variants[node_name][0])
            all_node_defs += [v["node"] | {"name": node_name} for v in spec["variants"].values()]
        for node in all_node_defs:
            if node.get("type") in _LLM_TYPES:
                names = set(llm_nodes.get(node["name"], [])) | set((node.get("inputs") or {}).keys())
                llm_nodes[node["name"]] = sorted(names)
                accepted = set(llm_params.get(node["name"], [])) | set(llm_tool_params(_llm_tool_id(node)))
                llm_params[node["name"]] = sorted(accepted)
            conn = node.get("connection") or (node.get("inputs") or {}).get("connection")
            if conn:
                connections.add(str(conn))
        return FlowInfo(
            path=flow_dir,
            kind="dag",
            inputs=list((data.get("inputs") or {}).keys()),
            optional_inputs=[
                k for k, v in (data.get("inputs") or {}).items() if (v or {}).get("default") is not None
            ],
            outputs=list((data.get("outputs") or {}).keys()),
            input_specs={
                str(k): {
                    key: value
                    for key, value in (v if isinstance(v, dict) else {}).items()
                    if key in ("type", "default")
                }
                for k, v in (data.get("inputs") or {}).items()
            },
            output_specs={
                str(k): {"type": v["type"]}
                for k, v in (data.get("outputs") or {}).items()
                if isinstance(v, dict) and "type" in v
            },
            variants=variants,
            default_variants=defaults,
            llm_nodes=llm_nodes,
            llm_params=llm_params,
            connections=sorted(connections),
        )

    # -- variant resolution ------------------------------------------------------
    def resolved_dag(self, flow_dir: Path, variant: FlowVariant, overrides: dict[str, str]) -> dict[str, Any]:
        """flow.dag.yaml with the chosen node variants and hyperparameters applied (prompt flow's rules)."""
        data = _read_yaml(flow_dir / _DAG)
        node_variants = data.pop("node_variants", None) or {}
        nodes = []
        for node in data.get("nodes") or []:
            name = node["name"]
            if node.get("use_variants"):
                spec = node_variants[name]
                chosen = variant.variants.get(name) or spec.get("default_variant_id")
                node = dict(spec["variants"][chosen]["node"], name=name)
            node = json.loads(json.dumps(node))
            if node.get("type") in _LLM_TYPES:
                # "<node>.<input>" sets that node's input; a bare name every LLM node whose tool
                # accepts it (by the tool function's signature) or that already sets it
                accepted = llm_tool_params(_llm_tool_id(node))
                for key, value in variant.params.items():
                    target, _, field_name = key.rpartition(".")
                    if target == name or (
                        not target and (field_name in accepted or field_name in (node.get("inputs") or {}))
                    ):
                        node.setdefault("inputs", {})[field_name] = value
            for holder in (node, node.get("inputs") or {}):
                conn = holder.get("connection")
                if isinstance(conn, str) and conn in overrides:
                    holder["connection"] = overrides[conn]
            nodes.append(node)
        data["nodes"] = nodes
        return data

    def export_variant(
        self,
        flow_dir: Path,
        variant: FlowVariant,
        target: Path,
        connection_overrides: dict[str, str] | None = None,
    ) -> Path:
        """Write a copy of the flow with ``variant`` baked in (what a release image serves).

        DAG: the chosen node variants replace the nodes and hyperparameters are set (no
        ``node_variants`` left). Flex: the parameters become the ``init`` defaults of flow.flex.yaml.
        """
        flow_dir = flow_dir.resolve()
        overrides = dict(connection_overrides or {})
        if target.exists():
            raise UserError(f"{target}: already exists; export a flow variant into a new folder")
        shutil.copytree(
            flow_dir, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow", "*.pyc")
        )
        if (flow_dir / _DAG).is_file():
            text = yaml.safe_dump(self.resolved_dag(flow_dir, variant, overrides), sort_keys=False)
            (target / _DAG).write_text(text, encoding="utf-8")
            return target
        data = _read_yaml(flow_dir / _FLEX)
        init = data.setdefault("init", {}) or {}
        for key, value in variant.params.items():
            if key not in init:
                raise UserError(f"{flow_dir / _FLEX}: init: no parameter {key!r} to set")
            init[key] = dict(init[key] or {}, default=value)
        for spec in init.values():
            if (
                isinstance(spec, dict)
                and isinstance(spec.get("default"), str)
                and spec["default"] in overrides
            ):
                spec["default"] = overrides[spec["default"]]
        data["init"] = init
        (target / _FLEX).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return target

    def effective_inputs(
        self, flow_dir: Path, variant: FlowVariant, connection_overrides: dict[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        flow_dir = flow_dir.resolve()
        overrides = dict(connection_overrides or {})
        if (flow_dir / _DAG).is_file():
            out: dict[str, dict[str, Any]] = {}
            for node in self.resolved_dag(flow_dir, variant, overrides).get("nodes") or []:
                if node.get("type") not in _LLM_TYPES:
                    continue
                accepted = set(llm_tool_params(_llm_tool_id(node))) | {"connection"}
                inputs = dict(node.get("inputs") or {})
                if node.get("connection"):
                    inputs.setdefault("connection", node["connection"])
                out[str(node["name"])] = {
                    k: v for k, v in sorted(inputs.items()) if k in accepted and not _is_reference(v)
                }
            return out
        info = self.describe(flow_dir)
        init = {k: v for k, v in info.init_params.items() if v is not None}
        init.update(variant.params)
        return {
            "init": {k: overrides.get(v, v) if isinstance(v, str) else v for k, v in sorted(init.items())}
        }

    def _materialize(self, flow_dir: Path, dag: dict[str, Any]) -> Path:
        text = yaml.safe_dump(dag, sort_keys=True)
        digest = hashlib.sha256((str(flow_dir.resolve()) + text).encode()).hexdigest()[:16]
        target = self.home / "resolved" / f"{flow_dir.name}-{digest}"
        if not (target / _DAG).is_file():
            tmp = target.with_name(target.name + f".tmp{os.getpid()}.{threading.get_ident()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(
                flow_dir, tmp, ignore=shutil.ignore_patterns("__pycache__", ".promptflow", "*.pyc")
            )
            (tmp / _DAG).write_text(text, encoding="utf-8")
            try:
                tmp.rename(target)
            except OSError:  # another thread or process made it first
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    # -- sessions ----------------------------------------------------------------
    def open(
        self,
        flow_dir: Path,
        variant: FlowVariant,
        connections: list[ConnectionSpec],
        connection_overrides: dict[str, str] | None = None,
        request_timeout_s: float | None = None,
    ) -> FlowSession:
        flow_dir = flow_dir.resolve()
        overrides = dict(connection_overrides or {})
        # one flow loads at a time: CPython 3.11 keeps the AST recursion depth per interpreter, so
        # two threads parsing source at once (our describe, prompt flow's loader) can fail with
        # "SystemError: AST constructor recursion depth mismatch"
        # (https://github.com/python/cpython/issues/106905)
        with _load_lock:
            info = self.describe(flow_dir)
            conns = connection_dicts(connections)
            _live_log_streams()
            with _StreamGuard():
                executor = self._executor(flow_dir, info, variant, conns, overrides)
        return _PromptflowSession(executor, info.kind, request_timeout_s)

    def _executor(
        self,
        flow_dir: Path,
        info: FlowInfo,
        variant: FlowVariant,
        conns: dict[str, dict[str, Any]],
        overrides: dict[str, str],
    ) -> Any:
        from promptflow.executor import FlowExecutor

        if info.kind == "flex":
            init = {k: v for k, v in info.init_params.items() if v is not None}
            init.update(variant.params)
            for key, value in list(init.items()):
                if isinstance(value, str) and value in overrides:
                    init[key] = overrides[value]
            executor = FlowExecutor.create(
                _flow_file(flow_dir),
                conns,
                flow_dir,
                init_kwargs=init,
                raise_ex=False,
                line_timeout_sec=LINE_TIMEOUT_S,
            )
        else:
            work = self._materialize(flow_dir, self.resolved_dag(flow_dir, variant, overrides))
            executor = FlowExecutor.create(
                work / _DAG, conns, work, raise_ex=False, line_timeout_sec=LINE_TIMEOUT_S
            )
        return executor


class _PromptflowSession(FlowSession):
    def __init__(self, executor: Any, kind: str, request_timeout_s: float | None = None) -> None:
        self.executor = executor
        self.kind = kind
        self.request_timeout_s = request_timeout_s

    def run_line(self, inputs: dict[str, Any], index: int) -> LineOutput:
        calls = _CallLog(self.request_timeout_s)
        token = _CALLS.set(calls)  # the line's nodes run on threads that copy this context
        try:
            with _StreamGuard():
                result = self.executor.exec_line(inputs, index=index, allow_generator_output=False)
        except Exception as exc:  # prompt flow raises for bad inputs even with raise_ex=False
            raise LineFailed(f"{type(exc).__name__}: {exc}", retryable=_is_retryable(str(exc))) from None
        finally:
            _CALLS.reset(token)
        status = str(getattr(result.run_info.status, "value", result.run_info.status))
        if status != "Completed":
            error = result.run_info.error or {}
            message = _error_text(error)
            if calls.timeouts and "ModelCallTimeout" not in message:
                message = f"ModelCallTimeout: {calls.timeouts} model call(s) abandoned after " + (
                    f"{self.request_timeout_s:g} s (request_timeout_s); {message}"
                )
            raise LineFailed(message, retryable=_is_retryable(message), retry_after=_retry_after(message))
        if self.kind == "flex":
            # prompt flow's batch shape of a flex line: a dict as is, a dataclass as its fields,
            # any other value under "output" (the executor adds line_number to a dict: dropped)
            outputs, single = output_dict(result.output)
            if not single:
                outputs.pop("line_number", None)
            return LineOutput(
                outputs=outputs,
                aggregation_inputs=outputs["output"] if single else outputs,
                single_output=single,
                usage=tuple(calls.calls),
            )
        output = result.output if isinstance(result.output, dict) else {"output": result.output}
        output = {k: v for k, v in output.items() if k != "line_number"}
        return LineOutput(
            outputs=dict(output), aggregation_inputs=result.aggregation_inputs, usage=tuple(calls.calls)
        )

    def aggregate(self, inputs: list[dict[str, Any]], lines: list[LineOutput]) -> dict[str, float]:
        if not lines or not self.executor.has_aggregation_node:
            return {}
        if self.kind == "dag":
            columns: dict[str, list[Any]] = {
                k: [i.get(k) for i in inputs] for k in (inputs[0] if inputs else {})
            }
            agg: dict[str, list[Any]] = {}
            for line in lines:
                for key, value in (line.aggregation_inputs or {}).items():
                    agg.setdefault(key, []).append(value)
            with _StreamGuard():
                result = self.executor.exec_aggregation(columns, agg)
        else:
            # prompt flow hands __aggregate__ each line's output: a dict as an AttrDict (r.key and
            # r["key"]), a single value as itself (promptflow/batch/_batch_engine.py)
            from promptflow._utils.utils import AttrDict

            values = [
                AttrDict(line.aggregation_inputs)
                if isinstance(line.aggregation_inputs, dict)
                else line.aggregation_inputs
                for line in lines
            ]
            with _StreamGuard():
                result = self.executor.exec_aggregation({}, values)
        metrics = dict(result.metrics or {})
        if not metrics and isinstance(result.output, dict):
            metrics = {k: v for k, v in result.output.items() if isinstance(v, (int, float))}
        return {k: float(v) for k, v in metrics.items()}


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    parts = [str(error.get("code") or ""), str(error.get("message") or "")]
    inner = error.get("innerError") or {}
    while isinstance(inner, dict) and inner:
        parts.append(str(inner.get("code") or ""))
        inner = inner.get("innerError") or {}
    return " ".join(p for p in parts if p)


def _is_retryable(message: str) -> bool:
    return any(name in message for name in _RETRYABLE) or " 429" in message or "Too Many Requests" in message


def _retry_after(message: str) -> float | None:
    match = _RETRY_AFTER.search(message)
    return float(match.group(1)) if match else None


def batch_run(
    flow_dir: Path,
    data: Path,
    column_mapping: dict[str, str],
    variant: str | None,
    connections: list[ConnectionSpec],
    name: str,
) -> dict[str, Any]:
    """One classic ``pf run`` batch run (the template's way): returns its status and outputs count.

    The connections are created in the prompt flow home for the run and deleted afterwards.
    """
    from promptflow.client import PFClient
    from promptflow.entities import AzureOpenAIConnection, OpenAIConnection

    pf = PFClient()
    created = []
    for c in connections:
        conn: Any
        if c.category == "AzureOpenAI":
            conn = AzureOpenAIConnection(
                name=c.name, api_key=c.api_key, api_base=c.target, api_version=c.api_version or "2024-02-01"
            )
        else:
            conn = OpenAIConnection(name=c.name, api_key=c.api_key, base_url=c.target)
        pf.connections.create_or_update(conn)
        created.append(c.name)
    try:
        run = pf.run(
            flow=str(flow_dir),
            data=str(data),
            column_mapping=column_mapping,
            variant=variant,
            name=name,
            stream=False,
        )
        details = pf.get_details(run)
        return {"status": run.status, "lines": len(details)}
    finally:
        for conn_name in created:
            pf.connections.delete(conn_name)
