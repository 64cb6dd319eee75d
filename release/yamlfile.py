"""Reading a YAML file that must hold a mapping, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from release.errors import UserError


def read_mapping(
    path: Path, shown: str | None = None, error: type[UserError] = UserError, expect: str = "a mapping"
) -> dict[str, Any]:
    """Load ``path``; raise ``error`` naming ``shown`` (default: the path) on bad YAML or a non-mapping."""
    shown = shown or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{shown}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{shown}: must be {expect}, got {type(data).__name__}")
    return data
