"""A flex flow's entry (``entry: <module>:<function or class>`` of flow.flex.yaml): its shape and outputs.

Read the way prompt flow 1.18.5 reads it (``promptflow/executor/_script_executor.py``,
``promptflow/_utils/tool_utils.py``, ``promptflow/_utils/dataclass_serializer.py``):

* the module is imported with the flow folder first on ``sys.path``; the entry is a function, or a
  class whose instances are called (``__call__``, possibly inherited); either may be ``async``;
* inputs are the parameters of the function / ``__call__`` except ``self``, ``*args``, ``**kwargs``;
  a parameter with a default value is optional;
* outputs come from the return annotation: the fields of a dataclass, the keys of a TypedDict,
  ``output`` for any other single value (``str``, ``int``, ``list``, ...); ``dict``, ``Mapping``,
  ``Any`` or no annotation: not known before the flow runs. A pydantic model is refused with the
  fix: prompt flow fails every line returning one ("FlowOutputUnserializable", measured on 1.18.5);
* a returned dict is the output as is, a dataclass becomes ``{field: value}``, any other value
  ``{"output": value}`` (``convert_eager_flow_output_to_dict``); values must be JSON-serializable
  (prompt flow fails the line otherwise); prompt flow's server answers a request with a single
  value itself (``response_original_value``).

Only the standard library here; the prompt flow executor is driven by ``promptflow.py``.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import sys
import threading
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from release.errors import UserError

DEFAULT_OUTPUT = "output"  # prompt flow's DEFAULT_OUTPUT_NAME
_import_lock = threading.Lock()


@dataclass(frozen=True)
class EntryShape:
    """What a flex flow's entry takes and returns."""

    inputs: list[str]
    optional_inputs: list[str] = field(default_factory=list)  # parameters with a default value
    outputs: list[str] | None = None  # None: not known before the flow runs
    is_async: bool = False
    is_class: bool = False


@contextlib.contextmanager
def _flow_dir_on_path(flow_dir: Path) -> Iterator[None]:
    path = str(flow_dir)
    sys.path.insert(0, path)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)


def _entry_file(flow_dir: Path, module_name: str) -> Path | None:
    for candidate in (
        flow_dir / (module_name.replace(".", "/") + ".py"),
        flow_dir / module_name.replace(".", "/") / "__init__.py",
    ):
        if candidate.is_file():
            return candidate.resolve()
    return None


def import_entry_module(flow_dir: Path, module_name: str, where: str) -> types.ModuleType:
    """Import the entry's module as prompt flow does (flow folder first on ``sys.path``).

    A module of the same name already imported from another folder (two flows with a
    ``grader.py`` each) is dropped from ``sys.modules`` first, so each flow gets its own file.
    """
    source = _entry_file(flow_dir, module_name)
    with _import_lock, _flow_dir_on_path(flow_dir):
        loaded = sys.modules.get(module_name)
        loaded_file = getattr(loaded, "__file__", None)
        if (
            loaded is not None
            and source is not None
            and (loaded_file is None or Path(loaded_file).resolve() != source)
        ):
            del sys.modules[module_name]
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if source is None and exc.name == module_name.split(".")[0]:
                raise UserError(
                    f"{where}: no module {module_name!r}: {flow_dir}/{module_name.replace('.', '/')}.py does "
                    "not exist and no installed package has that name; fix 'entry' (<module>:<name>)"
                ) from None
            raise UserError(
                f"{where}: cannot import {module_name!r}: {type(exc).__name__}: {exc}; install the "
                "flow's requirements.txt in this environment"
            ) from None
        except Exception as exc:
            raise UserError(
                f"{where}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
            ) from None


def resolve_entry(flow_dir: Path, entry: str, where: str) -> tuple[Any, Any]:
    """``(callable, class or None)`` of ``<module>:<name>``; the callable of a class is its ``__call__``."""
    module_name, sep, name = entry.partition(":")
    if not sep or not module_name or not name or ":" in name:
        raise UserError(
            f"{where}: entry: {entry!r} is not '<module>:<function or class>', e.g. 'labeler:Labeler'"
        )
    module = import_entry_module(flow_dir, module_name, f"{where}: entry: {entry!r}")
    target = getattr(module, name, None)
    shown = getattr(module, "__file__", None) or module_name
    if target is None:
        raise UserError(f"{where}: entry: {entry!r}: no class or function {name!r} in {Path(shown).name}")
    if inspect.isclass(target):
        call = next((vars(c)["__call__"] for c in target.__mro__[:-1] if "__call__" in vars(c)), None)
        if call is None:
            raise UserError(
                f"{where}: entry: {entry!r}: class {name!r} has no __call__ method; a class entry is "
                "called once per line (def __call__(self, ...))"
            )
        return call, target
    if inspect.isfunction(target) or inspect.iscoroutinefunction(target):
        return target, None
    raise UserError(
        f"{where}: entry: {entry!r}: {name!r} is a {type(target).__name__}, not a function or class"
    )


def entry_shape(flow_dir: Path, entry: str, where: str) -> EntryShape:
    """Inputs, optional inputs, outputs and async-ness of a flex flow's entry."""
    call, cls = resolve_entry(flow_dir, entry, where)
    original = inspect.unwrap(call)
    signature = inspect.signature(call)
    params = [
        p
        for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
    ]
    annotation = _return_annotation(call, signature)
    if isinstance(annotation, type) and _is_pydantic_model(annotation):
        raise UserError(
            f"{where}: entry: {entry!r} returns the pydantic model {annotation.__name__}, which prompt flow "
            "cannot store (FlowOutputUnserializable on every line): return a dict (model_dump()) annotated "
            "with a TypedDict, or a dataclass"
        )
    return EntryShape(
        inputs=[p.name for p in params],
        optional_inputs=[p.name for p in params if p.default is not p.empty],
        outputs=output_names(annotation),
        is_async=inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original),
        is_class=cls is not None,
    )


def _return_annotation(call: Any, signature: inspect.Signature) -> Any:
    try:
        hints = typing.get_type_hints(call)
    except Exception:  # an annotation naming something not importable: read it as written
        hints = {}
    if "return" in hints:
        return hints["return"]
    annotation = signature.return_annotation
    return inspect.Signature.empty if isinstance(annotation, str) else annotation


def output_names(annotation: Any) -> list[str] | None:
    """The output names a return annotation promises (see the module docstring); None: unknown."""
    if annotation is inspect.Signature.empty or annotation is Any:
        return None
    if isinstance(annotation, type):
        if dataclasses.is_dataclass(annotation):
            return [f.name for f in dataclasses.fields(annotation)]
        if typing.is_typeddict(annotation):
            try:
                return list(typing.get_type_hints(annotation))
            except Exception:
                return list(getattr(annotation, "__annotations__", {}))
        if _is_pydantic_model(annotation):
            return list(getattr(annotation, "model_fields", {}))
        if issubclass(annotation, collections.abc.Mapping):
            return None
        return [DEFAULT_OUTPUT]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        shapes = [output_names(a) for a in members]
        return [DEFAULT_OUTPUT] if all(s == [DEFAULT_OUTPUT] for s in shapes) else None
    if origin is typing.Annotated:
        return output_names(typing.get_args(annotation)[0])
    if isinstance(origin, type) and issubclass(origin, collections.abc.Mapping):
        return None
    if isinstance(annotation, typing.TypeVar):
        return None
    return [DEFAULT_OUTPUT]  # None, List[str], Iterator[str], Literal[...], ...


def _is_pydantic_model(cls: type) -> bool:
    return any(
        base.__module__.startswith("pydantic") and base.__name__ == "BaseModel" for base in cls.__mro__
    )


def output_dict(value: Any) -> tuple[dict[str, Any], bool]:
    """A flex line's return value as prompt flow stores it: ``(outputs, single)``.

    ``single`` is True when the flow returned one plain value (stored under ``output``; a
    server answers with the value itself). Values come out as JSON would give them back
    (tuples as lists), as prompt flow's outputs.jsonl and server give them.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}, False
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}, False
    return {DEFAULT_OUTPUT: json_ready(value)}, True


def json_ready(value: Any) -> Any:
    """``value`` as JSON gives it back: tuples as lists, keys as strings."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
