"""The flow-engine adapter: the only code that imports promptflow (see base.py)."""

from __future__ import annotations

from release.engine.base import Engine


def get_engine(home: object = None) -> Engine:
    """The engine for local runs (promptflow today; swap here when prompt flow retires)."""
    from pathlib import Path

    from release.engine.promptflow import PromptflowEngine

    return PromptflowEngine(Path(str(home)) if home is not None else None)
